//! TLS termination on a listener.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::{
    CertificateFacts, ClientIdentity, VERSIONS, certified_key, provider, read_ca_bundle,
    read_certificates, read_private_key, unix_now,
};
use crate::fswatch::{canonical, folder_of};
use switchyard_config::{ClientAuth, ListenerTlsConfig};

/// A listener's TLS: the rustls config in force (replaced whole when a
/// file changes) and how to build it again.
pub struct ServerTls {
    settings: ListenerTlsConfig,
    current: ArcSwap<Loaded>,
}

/// One reading of the files.
struct Loaded {
    config: Arc<ServerConfig>,
    offered: Arc<Offered>,
}

/// The certificates offered, in configured order, chosen by SNI.
#[derive(Debug)]
struct Offered(Vec<(Arc<CertifiedKey>, CertificateFacts)>);

impl ResolvesServerCert for Offered {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|sni| self.0.iter().find(|(_, facts)| facts.covers(sni)))
            .or_else(|| self.0.first());
        chosen.map(|(key, _)| Arc::clone(key))
    }
}

impl ServerTls {
    /// Reads the certificates, keys and CA bundle of `settings`.
    ///
    /// # Errors
    /// `(key, reason)`, the key relative to the `tls` table (e.g.
    /// `certificates[1].key_file`): a file unreadable or not PEM, a key
    /// that does not match its certificate, no certificate, a CA bundle
    /// without a usable CA.
    pub fn load(settings: &ListenerTlsConfig) -> Result<Self, (String, String)> {
        Ok(Self {
            current: ArcSwap::from_pointee(read(settings)?),
            settings: settings.clone(),
        })
    }

    /// Completes the TLS handshake on `io`; with the client's verified
    /// certificate's identity when it gave one.
    ///
    /// # Errors
    /// The handshake failed (no common version or cipher, a bad or missing
    /// client certificate where one is required, the client left).
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
    ) -> std::io::Result<(TlsStream<IO>, Option<Arc<ClientIdentity>>)> {
        let config = Arc::clone(&self.current.load().config);
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(io).await?;
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientIdentity::of(leaf))
            .map(Arc::new);
        Ok((stream, identity))
    }

    /// Reads the files again; on success, new handshakes use what was read
    /// (open connections keep what they negotiated). On failure the
    /// previous reading stays in force.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> Result<(), (String, String)> {
        self.current.store(Arc::new(read(&self.settings)?));
        Ok(())
    }

    /// The files this TLS config reads.
    pub fn files(&self) -> Vec<PathBuf> {
        self.settings
            .certificates
            .iter()
            .flat_map(|c| [c.cert_file.clone(), c.key_file.clone()])
            .chain(self.settings.client_ca_file.clone())
            .collect()
    }

    /// Logs a warning for each certificate whose validity has ended, with
    /// the date (the listener still offers it: a client decides).
    pub fn warn_if_expired(&self, listener: &str) {
        let now = unix_now();
        let current = self.current.load();
        for (i, (_, facts)) in current.offered.0.iter().enumerate() {
            if facts.expired(now) {
                tracing::warn!(
                    listener,
                    cert_file = %self.settings.certificates[i].cert_file.display(),
                    not_after = %facts.not_after_text,
                    "certificate has expired"
                );
            }
        }
    }
}

/// Reads `settings` into a rustls server config.
fn read(settings: &ListenerTlsConfig) -> Result<Loaded, (String, String)> {
    if settings.certificates.is_empty() {
        return Err((
            "certificates".into(),
            "at least one certificate is required".into(),
        ));
    }
    let mut offered = Vec::with_capacity(settings.certificates.len());
    for (i, files) in settings.certificates.iter().enumerate() {
        let key = |k: &str| format!("certificates[{i}].{k}");
        let chain = read_certificates(&files.cert_file).map_err(|e| (key("cert_file"), e))?;
        let facts = CertificateFacts::of(&chain[0]).map_err(|e| {
            (
                key("cert_file"),
                format!("{}: {e}", files.cert_file.display()),
            )
        })?;
        let private = read_private_key(&files.key_file).map_err(|e| (key("key_file"), e))?;
        let certified =
            certified_key(chain, private, &files.key_file).map_err(|e| (key("key_file"), e))?;
        offered.push((Arc::new(certified), facts));
    }
    let offered = Arc::new(Offered(offered));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| ("certificates".to_string(), e.to_string()))?;
    let builder = match &settings.client_ca_file {
        Some(path) => {
            let key = || "client_ca_file".to_string();
            let roots = read_ca_bundle(path).map_err(|e| (key(), e))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| (key(), format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(&offered) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        offered,
    })
}

/// Watches the files of every TLS listener (the directories that hold
/// them, so that a file replaced by a rename is seen) for as long as the
/// returned handle lives, and reloads a listener's TLS once when one of its
/// files changes (content changes only, debounced: [`crate::fswatch`]).
///
/// # Errors
/// A reason when a directory cannot be watched.
pub fn watch_certificates(
    listeners: Vec<(String, Arc<ServerTls>)>,
) -> Result<crate::fswatch::Watch, String> {
    let mut by_file: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (i, (_, tls)) in listeners.iter().enumerate() {
        for file in tls.files() {
            by_file.entry(canonical(&file)).or_default().push(i);
        }
    }
    let mut dirs: Vec<PathBuf> = by_file.keys().map(|f| folder_of(f)).collect();
    dirs.sort();
    dirs.dedup();
    crate::fswatch::watch_dirs(&dirs, move |paths| {
        let mut touched: Vec<usize> = paths
            .iter()
            .filter_map(|p| by_file.get(&canonical(p)))
            .flatten()
            .copied()
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            let (listener, tls) = &listeners[i];
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(listener, "TLS certificates reloaded");
                    tls.warn_if_expired(listener);
                }
                Err((key, reason)) => tracing::warn!(
                    listener,
                    key = %format!("tls.{key}"),
                    %reason,
                    "TLS files changed but cannot be loaded; the previous certificates stay in force"
                ),
            }
        }
    })
}
