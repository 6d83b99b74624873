//! TLS to `https://` instances.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    VERSIONS, certified_key, provider, read_ca_bundle, read_certificates, read_private_key,
};
use switchyard_config::UpstreamTlsConfig;

/// A pool's TLS client: how it verifies its instances and what it shows
/// them.
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
}

/// Mozilla's root certificates (webpki-roots), built once.
fn mozilla_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }))
}

impl UpstreamTls {
    /// The client for a pool with `settings` (`None`: Mozilla's roots, the
    /// instance's host as the name, no client certificate), offering the
    /// `alpn` protocols (e.g. `h2`, `http/1.1`), in order.
    ///
    /// # Errors
    /// `(key, reason)`, the key relative to the `tls` table: an unreadable
    /// or empty CA bundle, a client certificate without its key (or the
    /// reverse) or with a key that does not match, an `sni` that is not a
    /// DNS name or IP address.
    pub fn load(
        settings: Option<&UpstreamTlsConfig>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, (String, String)> {
        let default = UpstreamTlsConfig::default();
        let settings = settings.unwrap_or(&default);
        let roots = match &settings.ca_file {
            Some(path) => Arc::new(read_ca_bundle(path).map_err(|e| ("ca_file".to_string(), e))?),
            None => mozilla_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| ("ca_file".to_string(), e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&settings.cert_file, &settings.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let chain =
                    read_certificates(cert_file).map_err(|e| ("cert_file".to_string(), e))?;
                let key = read_private_key(key_file).map_err(|e| ("key_file".to_string(), e))?;
                certified_key(chain.clone(), key.clone_key(), key_file)
                    .map_err(|e| ("key_file".to_string(), e))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    (
                        "key_file".to_string(),
                        format!("{}: {e}", key_file.display()),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(("key_file".into(), "give `key_file` with `cert_file`".into()));
            }
            (None, Some(_)) => {
                return Err((
                    "cert_file".into(),
                    "give `cert_file` with `key_file`".into(),
                ));
            }
        };
        config.alpn_protocols = alpn;
        let sni = match &settings.sni {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                (
                    "sni".to_string(),
                    format!("`{name}` is not a DNS name or IP address"),
                )
            })?),
            None => None,
        };
        Ok(Self {
            config: Arc::new(config),
            sni,
        })
    }

    /// Completes the TLS handshake with the instance at `host` over `tcp`,
    /// verifying its certificate for the pool's `sni` or else `host`.
    ///
    /// # Errors
    /// `host` is not a valid name, or the handshake failed (the
    /// certificate is not trusted or not for that name, no common version).
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.sni {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("`{host}`: {e}"))
            })?,
        };
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }
}
