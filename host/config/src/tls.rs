//! TLS settings, as the config file gives them: a listener's (termination)
//! and a pool's (to its `https://` instances). Files are PEM; relative
//! paths are resolved against the config file's directory. Loading the
//! config reads every file (through [`Resources`](crate::Resources)), so a
//! missing file, a key that does not match its certificate or an
//! unreadable CA bundle is refused at load, naming the key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// TLS on a listener (`[listeners.tls]`, or `[admin.tls]`): TLS 1.2 and
/// 1.3, ALPN `h2` and `http/1.1`.
///
/// ```toml
/// [[listeners]]
/// listen = "0.0.0.0:8443"
/// tls = { certificates = [
///   { cert_file = "certs/example.pem", key_file = "certs/example.key" },
///   { cert_file = "certs/api.pem", key_file = "certs/api.key" },
/// ], client_ca_file = "certs/clients-ca.pem" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// The certificates offered; at least one. A client's SNI chooses the
    /// first whose DNS names cover it; a client that sends no SNI, or one no
    /// certificate covers, gets the first. Files are read again when they
    /// change on disk (new handshakes get the new certificate; open
    /// connections keep theirs).
    pub certificates: Vec<CertificateFiles>,
    /// PEM bundle of the CAs that sign client certificates: with it the
    /// listener asks every client for a certificate (mTLS) and routes can
    /// match its names (`match = { client_san = … }`). Default: none.
    #[schema(value_type = Option<String>)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `"required"` (the default; a client without
    /// a valid certificate fails the handshake) or `"optional"` (served
    /// without an identity).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM file: the certificate, then its intermediates.
    #[schema(value_type = String)]
    pub cert_file: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    #[schema(value_type = String)]
    pub key_file: PathBuf,
}

/// Whether a client certificate is required on an mTLS listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No certificate, no connection.
    #[default]
    Required,
    /// A certificate is asked for and verified when given.
    Optional,
}

/// TLS to a pool's `https://` instances (`[pools.NAME.tls]`); without
/// it, `https://` instances are verified against Mozilla's root
/// certificates (webpki-roots) with the instance's host as the name.
/// There is no switch to skip verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of the CAs that sign the instances' certificates, instead
    /// of Mozilla's roots. Default: none.
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and that the instances' certificates must
    /// hold. Default: each instance's host (an IP address is checked
    /// against the certificate's IP names and sends no SNI).
    pub sni: Option<String>,
    /// PEM file of the client certificate shown to the instances (mTLS);
    /// with `key_file`. Default: none.
    #[schema(value_type = Option<String>)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[schema(value_type = Option<String>)]
    pub key_file: Option<PathBuf>,
}

impl ListenerTlsConfig {
    /// The paths in this table, to resolve against the config's directory.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.certificates
            .iter_mut()
            .flat_map(|c| [&mut c.cert_file, &mut c.key_file])
            .chain(self.client_ca_file.as_mut())
    }
}

impl UpstreamTlsConfig {
    /// The paths in this table, to resolve against the config's directory.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.ca_file
            .as_mut()
            .into_iter()
            .chain(self.cert_file.as_mut())
            .chain(self.key_file.as_mut())
    }
}
