//! The identity a client proved with its certificate (mTLS), as routes
//! match it and as upstreams and plugins read it.

use std::sync::Arc;

use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::CertificateFacts;

/// The name of the header that carries a verified client certificate's
/// identity to the instance (and to plugins that ask for it), in Envoy's
/// format. Switchyard removes it from every client request and sets it
/// only on connections whose client certificate it verified (Envoy's
/// `forward_client_cert_details: SANITIZE_SET`).
pub const FORWARDED_CLIENT_CERT: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-client-cert");

/// What a request that came over TLS carries (a request extension set by
/// the listener): the client's verified certificate, when it gave one.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The verified client certificate's identity (mTLS listeners).
    pub identity: Option<Arc<ClientIdentity>>,
}

/// A client certificate verified on a TLS connection (against the
/// listener's `client_ca_file`), read once per connection.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The subject's distinguished name (RFC 4514 text).
    pub subject: String,
    /// Every subject alternative name as text (DNS names, URIs such as
    /// SPIFFE ids, e-mail addresses, IP addresses).
    pub sans: Vec<String>,
    /// The `x-forwarded-client-cert` value: `Hash=<sha256 of the DER,
    /// hex>;Subject="<subject>"` then `;URI=…` and `;DNS=…` per name
    /// (Envoy's element format).
    pub forwarded: HeaderValue,
}

impl ClientIdentity {
    /// The identity in the certificate `der`, or `None` when it cannot be
    /// read (rustls verified it, so this does not happen in practice).
    pub fn of(der: &[u8]) -> Option<Self> {
        let facts = CertificateFacts::of(der).ok()?;
        let mut forwarded = String::from("Hash=");
        for byte in Sha256::digest(der) {
            forwarded.push_str(&format!("{byte:02x}"));
        }
        forwarded.push_str(";Subject=");
        forwarded.push_str(&quoted(&facts.subject));
        let uris = facts.uris.iter().map(|u| ("URI", u));
        for (kind, name) in uris.chain(facts.dns_names.iter().map(|d| ("DNS", d))) {
            forwarded.push(';');
            forwarded.push_str(kind);
            forwarded.push('=');
            forwarded.push_str(&quoted(name));
        }
        Some(Self {
            forwarded: HeaderValue::try_from(forwarded).ok()?,
            subject: facts.subject,
            sans: facts.sans,
        })
    }

    /// Whether `san` is one of the certificate's subject alternative names,
    /// compared ASCII case-insensitively.
    pub fn has_san(&self, san: &str) -> bool {
        self.sans.iter().any(|s| s.eq_ignore_ascii_case(san))
    }
}

/// `value` as an XFCC value, double-quoted with inner quotes and
/// backslashes escaped (Envoy quotes the subject and any value holding
/// `,`, `;` or `=`; quoting every value reads the same).
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}
