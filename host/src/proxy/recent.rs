//! The recent-request log: the last N requests answered, for operators
//! (`GET /v1/requests`). Bounded; off (capacity 0) without an admin listener.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One answered request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Unix time the answer was sent, ms.
    pub at_ms: u64,
    /// Method.
    pub method: String,
    /// Host the client addressed.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Index of the route that served it.
    pub route: usize,
    /// Status sent.
    pub status: u16,
    /// Time to the response headers, µs.
    pub duration_us: u64,
    /// The client's address.
    pub client: IpAddr,
    /// The pool that answered, when one did.
    pub pool: Option<String>,
    /// The instance that answered (`http://host:port`), when one did.
    pub instance: Option<String>,
    /// Attempts made (1 without a retry; 0 when none could be made).
    pub attempts: u32,
}

/// Who served a request: set on a pool route's answer while the
/// recent-request log is on, read back when it is logged.
#[derive(Debug, Clone)]
pub struct Served {
    /// The pool.
    pub pool: String,
    /// The instance's URL.
    pub instance: String,
    /// Attempts made.
    pub attempts: u32,
}

/// The last `capacity` requests, oldest dropped first.
#[derive(Debug)]
pub struct RecentRequests {
    capacity: usize,
    entries: Mutex<VecDeque<RequestRecord>>,
}

impl RecentRequests {
    /// A log of `capacity` requests (0: nothing is recorded).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Whether anything is recorded (the caller skips building a record otherwise).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Records `record` with the current time.
    pub fn record(&self, mut record: RequestRecord) {
        if self.capacity == 0 {
            return;
        }
        record.at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(record);
    }

    /// The recorded requests, newest first.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().rev().cloned().collect()
    }
}
