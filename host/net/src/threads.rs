//! A number per thread, for state striped by thread: plugin instance slots,
//! idle upstream connections, plugin-call counters. Worker threads then
//! never share a lock or a cache line on the data path.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The calling thread's number: threads are numbered 0, 1, 2, … in the
/// order in which they first ask. While serving, the runtime's worker
/// threads are the ones that ask (they make the plugin calls and the
/// upstream requests), so with `n` stripes for `n` workers each worker
/// gets its own stripe (`thread_index() % n`); a thread that asks between
/// them shifts the pairing, which costs sharing, never correctness.
pub fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}
