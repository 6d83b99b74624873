//! The one conversion of the request context ([`RequestContext`], shared by
//! every engine) to the WIT `request-info` every plugin kind receives.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::HeaderName;

use super::bindings::balancer::switchyard::plugin::types::RequestInfo;
use switchyard_engines::policy::RequestContext;

/// An empty `request-info`, to fill per call.
pub(super) fn empty() -> RequestInfo {
    RequestInfo {
        method: String::new(),
        authority: String::new(),
        path: String::new(),
        headers: Vec::new(),
        client_addr: String::new(),
    }
}

/// `request` as a `request-info` carrying only the `wanted` headers.
pub(super) fn request_info(request: &RequestContext<'_>, wanted: &[HeaderName]) -> RequestInfo {
    let mut info = empty();
    fill_request(&mut info, request, wanted);
    info
}

/// Writes `addr` into `out` as `Display` does (`1.2.3.4:5`, `[::1]:5`);
/// IPv4 without the formatting machinery, which cost a tenth of a small
/// plugin call.
fn write_addr(out: &mut String, addr: SocketAddr) {
    out.clear();
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u32::from(octet));
            }
            out.push(':');
            push_decimal(out, u32::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Copies the request facts into the reused `info`, keeping its buffers.
pub(super) fn fill_request(
    info: &mut RequestInfo,
    request: &RequestContext<'_>,
    wanted: &[HeaderName],
) {
    info.method.clear();
    info.method.push_str(request.method.as_str());
    info.authority.clear();
    info.authority.push_str(request.authority);
    info.path.clear();
    info.path.push_str(request.path);
    write_addr(&mut info.client_addr, request.client_addr);
    // Entries are overwritten in place: their strings keep their buffers.
    let mut used = 0;
    for name in wanted {
        for value in request.headers.get_all(name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            if let Some((n, v)) = info.headers.get_mut(used) {
                n.clear();
                n.push_str(name.as_str());
                v.clear();
                v.push_str(&value);
            } else {
                info.headers
                    .push((name.as_str().to_string(), value.into_owned()));
            }
            used += 1;
        }
    }
    info.headers.truncate(used);
}

#[cfg(test)]
mod tests {
    use super::write_addr;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// The fast form is exactly `Display`'s, for every address.
        #[test]
        fn addresses_are_written_as_display_writes_them(addr: std::net::SocketAddr) {
            let mut out = String::from("stale");
            write_addr(&mut out, addr);
            prop_assert_eq!(out, addr.to_string());
        }
    }
}
