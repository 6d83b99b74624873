//! The one conversion of the request context ([`RequestContext`], shared by
//! every engine) to the WIT `request-info` every plugin kind receives.

use std::fmt::Write as _;

use http::HeaderName;

use super::bindings::balancer::switchyard::plugin::types::RequestInfo;
use crate::policy::RequestContext;

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
    info.client_addr.clear();
    let _ = write!(info.client_addr, "{}", request.client_addr);
    info.headers.clear();
    for name in wanted {
        for value in request.headers.get_all(name) {
            info.headers.push((
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
}
