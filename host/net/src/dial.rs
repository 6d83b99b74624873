//! Dialing an instance: a TCP connection (no Nagle), TLS to `https://`
//! instances, and the HTTP/1.1 or HTTP/2 handshake, the connection's task
//! spawned. Shared by the data path's connection pool and the active
//! health checks, so that a probe connects exactly as a request does.

use http::header::HOST;
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::UpstreamProtocol;
use tokio::net::TcpStream;

use crate::tls::UpstreamTls;

/// Where a connection goes: an instance's `host:port`, and whether its URL
/// is `https://`.
#[derive(Debug, Clone, Copy)]
pub struct Address<'a> {
    /// `host:port` (a bare host takes 443 when `secure`, else 80).
    pub authority: &'a Authority,
    /// TLS to the instance.
    pub secure: bool,
}

/// Why an upstream request failed.
#[derive(Debug)]
pub struct UpstreamError {
    connect: bool,
    stale: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl UpstreamError {
    /// Whether no connection could be opened (nothing was sent): refused,
    /// unreachable, a name that does not resolve, or past
    /// `connect_timeout_ms`.
    pub fn is_connect(&self) -> bool {
        self.connect
    }

    /// Whether the request went on an idle HTTP/1.1 connection kept from
    /// an earlier request and failed before any answer: most likely the
    /// instance closed that connection as it was taken (its keep-alive
    /// timeout), which says nothing of the instance's health. RFC 9112
    /// §9.3.1 lets a client send an idempotent request again on a new
    /// connection then; nginx does so without counting an attempt.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// A failure to connect: nothing was sent.
    pub fn connect(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            connect: true,
            stale: false,
            source: source.into(),
        }
    }

    /// A failed exchange; `stale` when on a kept connection.
    pub fn send(source: hyper::Error, stale: bool) -> Self {
        Self {
            connect: false,
            stale,
            source: source.into(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.connect {
            "cannot connect"
        } else {
            "request failed"
        })
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A new connection to an instance, in the HTTP version settled.
pub enum Connected<B> {
    /// HTTP/1.1: one request at a time.
    Http1(http1::SendRequest<B>),
    /// HTTP/2: the sender is cloned for concurrent requests.
    H2(http2::SendRequest<B>),
}

impl<B> Connected<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sends one request (origin-form URI; made absolute for HTTP/2 from
    /// its `Host` and `to`) once the connection can take it.
    ///
    /// # Errors
    /// The connection closed or the exchange failed.
    pub async fn send(
        &mut self,
        to: Address<'_>,
        mut request: Request<B>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Connected::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Connected::H2(sender) => {
                absolute_uri(&mut request, to);
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

/// Makes `request`'s origin-form URI absolute for HTTP/2's `:scheme` and
/// `:authority`: the scheme of `to`, the authority of the `Host` header
/// (the client's, kept as over HTTP/1.1; the header itself goes, as RFC
/// 9113 §8.3.1 asks of an intermediary, and nginx refuses both) or else
/// of `to`.
fn absolute_uri<B>(request: &mut Request<B>, to: Address<'_>) {
    let scheme = if to.secure {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let authority = request
        .headers_mut()
        .remove(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| to.authority.clone());
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// A new connection to `to`, over `tls` when it is `https://`,
/// in `protocol` (HTTP/2 by ALPN over TLS, or by prior knowledge over
/// plain TCP when `protocol` is `h2`), its task spawned (the connection
/// closes when the sender is dropped).
///
/// # Errors
/// `UpstreamError` of the connect kind: no TCP connection, a failed TLS
/// handshake, an instance whose ALPN refuses the `h2` asked for, or a
/// failed HTTP handshake.
pub async fn open<B>(
    tls: &UpstreamTls,
    to: Address<'_>,
    protocol: UpstreamProtocol,
) -> Result<Connected<B>, UpstreamError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let secure = to.secure;
    let stream = connect_tcp(to.authority, secure)
        .await
        .map_err(UpstreamError::connect)?;
    if !secure {
        return match protocol {
            UpstreamProtocol::H2 => handshake_h2(stream).await.map(Connected::H2),
            UpstreamProtocol::Http1 | UpstreamProtocol::Auto => {
                handshake(stream).await.map(Connected::Http1)
            }
        };
    }
    let stream = tls
        .connect(host_of(to.authority), stream)
        .await
        .map_err(|e| UpstreamError::connect(format!("TLS handshake: {e}")))?;
    let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    match (protocol, alpn_h2) {
        (UpstreamProtocol::H2 | UpstreamProtocol::Auto, true) => {
            handshake_h2(stream).await.map(Connected::H2)
        }
        (UpstreamProtocol::H2, false) => Err(UpstreamError::connect(
            "the instance does not speak HTTP/2 (protocol = \"h2\"): ALPN did not settle on h2",
        )),
        _ => handshake(stream).await.map(Connected::Http1),
    }
}

/// An HTTP/2 connection over `io`, its task spawned.
async fn handshake_h2<IO, B>(io: IO) -> Result<http2::SendRequest<B>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}

/// The host of `authority`, without an IPv6 address's brackets.
fn host_of(authority: &Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A TCP connection to `authority` (its port, else 443 with `tls` or 80),
/// no Nagle.
///
/// # Errors
/// The name does not resolve, or the connection is refused or unreachable.
pub async fn connect_tcp(authority: &Authority, tls: bool) -> std::io::Result<TcpStream> {
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = TcpStream::connect((host_of(authority), port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP/1.1 connection over `io` that can be upgraded (101), its task
/// spawned.
async fn handshake<IO, B>(io: IO) -> Result<http1::SendRequest<B>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}
