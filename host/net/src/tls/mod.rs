//! TLS with rustls (ring as the crypto provider; TLS 1.2 and 1.3 only):
//! termination on listeners ([`ServerTls`]: certificates chosen by SNI,
//! reloaded when their files change, optional client certificates) and
//! origination to `https://` instances ([`UpstreamTls`]).
//!
//! Certificates and keys are PEM files. A certificate's names are its
//! subject alternative names (DNS), as browsers and rustls's own verifier
//! read them; its common name is not a name.

mod client;
mod identity;
mod server;

pub use client::UpstreamTls;
pub use identity::{ClientIdentity, ClientTls, FORWARDED_CLIENT_CERT};
pub use server::{ServerTls, watch_certificates};

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The protocol versions offered and accepted: TLS 1.3 and 1.2 (1.1 and
/// older are refused, as Mozilla's "intermediate" profile).
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider every TLS config uses (ring, built once).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The certificates of the PEM file at `path`, in file order.
///
/// # Errors
/// A reason naming the file: unreadable, not PEM, or no certificate in it.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`.
///
/// # Errors
/// A reason naming the file: unreadable, or no private key in it.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A trust store of the certificates in the PEM file at `path` (a CA bundle).
///
/// # Errors
/// A reason naming the file: unreadable, no certificate, or one that is
/// not a usable trust anchor.
pub fn read_ca_bundle(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A signing key for `chain` from `key`, checked to be the key of the
/// chain's first certificate.
///
/// # Errors
/// A reason naming `key_file` when the key is unsupported or belongs to
/// another certificate.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_file: &Path,
) -> Result<rustls::sign::CertifiedKey, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unsupported private key: {e}", key_file.display()))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!(
            "{}: the key does not match the certificate",
            key_file.display()
        )
    })?;
    Ok(certified)
}

/// What Switchyard reads of a certificate: its DNS names (subject
/// alternative names, lowercased), its subject, and its validity.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    /// DNS subject alternative names, lowercased (`*.example.com` kept as is).
    pub dns_names: Vec<String>,
    /// URI subject alternative names (SPIFFE ids and the like).
    pub uris: Vec<String>,
    /// Every subject alternative name, as text: DNS names, URIs, e-mail
    /// addresses and IP addresses.
    pub sans: Vec<String>,
    /// The subject's distinguished name (RFC 4514 text).
    pub subject: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// End of validity, RFC 2822 text (for messages).
    pub not_after_text: String,
}

impl CertificateFacts {
    /// Reads `der`.
    ///
    /// # Errors
    /// A reason when it is not an X.509 certificate.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        dns_names.push(dns.to_ascii_lowercase());
                        sans.push((*dns).to_string());
                    }
                    GeneralName::URI(uri) => {
                        uris.push((*uri).to_string());
                        sans.push((*uri).to_string());
                    }
                    GeneralName::RFC822Name(mail) => sans.push((*mail).to_string()),
                    GeneralName::IPAddress(ip) => {
                        if let Some(ip) = ip_text(ip) {
                            sans.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let not_after = cert.validity().not_after;
        Ok(Self {
            dns_names,
            uris,
            sans,
            subject: cert.subject().to_string(),
            not_after: not_after.timestamp(),
            not_after_text: not_after
                .to_rfc2822()
                .unwrap_or_else(|_| not_after.to_string()),
        })
    }

    /// Whether the certificate's validity ended before `now` (Unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.not_after < now
    }

    /// Whether one of the DNS names covers `host` (case-insensitive; a
    /// `*.` name covers exactly one more label, RFC 6125 §6.4.3).
    pub fn covers(&self, host: &str) -> bool {
        self.dns_names
            .iter()
            .any(|name| match name.strip_prefix("*.") {
                Some(parent) => host.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && rest.eq_ignore_ascii_case(parent)
                }),
                None => name.eq_ignore_ascii_case(host),
            })
    }
}

/// An IP address SAN's octets as text.
fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets)
            .ok()
            .map(|o| std::net::Ipv4Addr::from(o).to_string()),
        16 => <[u8; 16]>::try_from(octets)
            .ok()
            .map(|o| std::net::Ipv6Addr::from(o).to_string()),
        _ => None,
    }
}

/// Seconds since the Unix epoch now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(names: &[&str]) -> CertificateFacts {
        CertificateFacts {
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            uris: Vec::new(),
            sans: Vec::new(),
            subject: String::new(),
            not_after: 0,
            not_after_text: String::new(),
        }
    }

    #[test]
    fn names_cover_hosts_as_rfc_6125_says() {
        let f = facts(&["example.com", "*.api.example.com"]);
        assert!(f.covers("example.com"));
        assert!(f.covers("EXAMPLE.com"));
        assert!(f.covers("v1.api.example.com"));
        assert!(!f.covers("api.example.com"));
        assert!(!f.covers("a.v1.api.example.com"));
        assert!(!f.covers(".api.example.com"));
        assert!(!f.covers("www.example.com"));
    }
}
