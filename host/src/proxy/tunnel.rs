//! Upgraded connections: a WebSocket handshake (or any `Connection:
//! Upgrade` protocol) that the instance accepts with `101 Switching
//! Protocols` turns the client's connection and the instance's into one
//! tunnel, relayed byte for byte both ways until either side closes (as
//! nginx's `proxy_pass` with `Upgrade` does). The request counts once; the
//! instance counts it in flight, and the pool's bulkhead holds its slot,
//! for as long as the tunnel lives. On shutdown, tunnels get the grace
//! period to close by themselves; those still open are then closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};

/// The tunnels open in this process.
pub struct Tunnels {
    open: AtomicUsize,
    closed_one: Notify,
    closing: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            closed_one: Notify::new(),
            closing: watch::Sender::new(false),
        }
    }
}

impl Tunnels {
    /// Relays `client` and `upstream` both ways once both upgrades are
    /// done, holding `held` (the request's in-flight mark, its bulkhead
    /// slot) until the tunnel closes.
    pub fn relay<H: Send + 'static>(
        self: &Arc<Self>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        held: H,
    ) {
        self.open.fetch_add(1, Ordering::SeqCst);
        let tunnels = Arc::clone(self);
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let relay = async {
                let (client, upstream) = tokio::try_join!(client, upstream)?;
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            tokio::select! {
                relayed = relay => if let Err(error) = relayed {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                },
                _ = closing.wait_for(|closing| *closing) => {
                    tracing::debug!("upgraded connection closed at shutdown");
                }
            }
            drop(held);
            tunnels.open.fetch_sub(1, Ordering::SeqCst);
            tunnels.closed_one.notify_waiters();
        });
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits up to `grace` for the open tunnels to close, then closes the
    /// rest.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Registered before the count is read: a close in between wakes it.
            let closed = self.closed_one.notified();
            if self.open() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                tracing::warn!(
                    open = self.open(),
                    "upgraded connections still open after the grace period; closing"
                );
                break;
            }
        }
        self.closing.send_replace(true);
    }
}
