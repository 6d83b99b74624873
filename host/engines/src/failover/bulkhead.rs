//! The bulkhead: bounded concurrency and a bounded, timed queue per pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use switchyard_config::BulkheadConfig;

/// A pool bulkhead's occupancy (Envoy's `upstream_rq_active` and
/// `upstream_rq_pending_active`, per pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BulkheadStatus {
    /// Requests holding one of its `max_concurrent` slots.
    pub active: usize,
    /// Requests waiting in its queue for a slot.
    pub queued: usize,
}

/// Why a request was shed; shown as `the queue is full` or `no slot within
/// the queue timeout` in the 503's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    /// The queue was full.
    #[error("the queue is full")]
    QueueFull,
    /// The request waited `queue_timeout_ms` without a slot.
    #[error("no slot within the queue timeout")]
    QueueTimeout,
}

/// Bounded concurrency for one pool.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

impl Bulkhead {
    /// A bulkhead per `config` (validated at load).
    pub fn new(config: &BulkheadConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            max_concurrent: config.max_concurrent as usize,
            waiting: AtomicUsize::new(0),
            max_queue: config.max_queue as usize,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
        }
    }

    /// A slot, at once if one is free, else after waiting in the queue. The
    /// slot is held until the permit drops: the data path keeps it until the
    /// response body has been streamed.
    ///
    /// # Errors
    /// [`Shed`] when the queue is full or the wait times out.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w < self.max_queue).then_some(w + 1)
            });
        if queued.is_err() {
            return Err(Shed::QueueFull);
        }
        let result =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Shed::QueueTimeout),
        }
    }

    /// Requests holding a slot and requests waiting in the queue, now.
    pub fn occupancy(&self) -> BulkheadStatus {
        BulkheadStatus {
            active: self
                .max_concurrent
                .saturating_sub(self.slots.available_permits()),
            queued: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Seconds a shed client should wait before retrying (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.queue_timeout.as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn full_slots_queue_then_shed() {
        let b = Bulkhead::new(&BulkheadConfig {
            max_concurrent: 1,
            max_queue: 1,
            queue_timeout_ms: 100,
        });
        let occupancy = |active, queued| BulkheadStatus { active, queued };
        assert_eq!(b.occupancy(), occupancy(0, 0));
        let first = b.enter().await.unwrap();
        assert_eq!(b.occupancy(), occupancy(1, 0));
        // One may wait; a third is shed at once.
        let (queued, shed) = tokio::join!(b.enter(), async {
            tokio::task::yield_now().await;
            assert_eq!(b.occupancy(), occupancy(1, 1));
            b.enter().await.map(|_| ())
        });
        assert_eq!(shed, Err(Shed::QueueFull));
        assert_eq!(
            queued.map(|_| ()),
            Err(Shed::QueueTimeout),
            "the slot was never freed"
        );
        assert_eq!(b.occupancy(), occupancy(1, 0));
        drop(first);
        assert_eq!(b.occupancy(), occupancy(0, 0));
        assert!(b.enter().await.is_ok());
    }
}
