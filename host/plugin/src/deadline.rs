//! A call's CPU deadline on top of wasmtime's epochs: the epoch counts wall
//! time, and a thread the OS preempts mid-call (a busy machine, more
//! threads than cores) would be blamed for time it did not run.
//!
//! When a call reaches its epoch deadline (`ticks` ticks of 1 ms after it
//! started), the store's callback reads the thread's CPU clock and gives it
//! another `ticks`; at the next expiry it traps only if the thread ran for
//! at least half of that window — a call spinning on its core is
//! interrupted after about twice its deadline, a call that was not running
//! is not. The CPU clock is read only at an expiry, never on a call's fast
//! path (it is a system call, unlike the monotonic clock).

use std::time::Duration;

use wasmtime::UpdateDeadline;

/// The deadline state of the call in progress.
#[derive(Debug, Default)]
pub struct CpuDeadline {
    /// The call's deadline, in epoch ticks (ms).
    ticks: u64,
    /// The thread's CPU time at the last expiry, if one happened.
    mark: Option<Duration>,
}

impl CpuDeadline {
    /// The state of a call that may run for `ticks` ticks.
    pub fn new(ticks: u64) -> Self {
        Self { ticks, mark: None }
    }

    /// Decides at an expiry, given the calling thread's CPU time `now`:
    /// another window, or the trap.
    pub fn on_expiry(&mut self, now: Duration) -> UpdateDeadline {
        let window = Duration::from_millis(self.ticks);
        match self.mark.replace(now) {
            Some(mark) if now.saturating_sub(mark) >= window / 2 => UpdateDeadline::Interrupt,
            _ => UpdateDeadline::Continue(self.ticks.max(1)),
        }
    }
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interrupts(update: UpdateDeadline) -> bool {
        matches!(update, UpdateDeadline::Interrupt)
    }

    #[test]
    fn a_call_that_ran_through_the_window_is_interrupted_at_the_second_expiry() {
        let mut d = CpuDeadline::new(5);
        let ms = Duration::from_millis;
        assert!(
            !interrupts(d.on_expiry(ms(100))),
            "the first expiry only marks"
        );
        assert!(interrupts(d.on_expiry(ms(104))), "4 of 5 ms on the CPU");
    }

    #[test]
    fn a_call_that_was_preempted_is_given_more_windows() {
        let mut d = CpuDeadline::new(5);
        let ms = Duration::from_millis;
        assert!(!interrupts(d.on_expiry(ms(100))));
        assert!(
            !interrupts(d.on_expiry(ms(101))),
            "1 of 5 ms: it was not running"
        );
        assert!(!interrupts(d.on_expiry(ms(102))));
        assert!(interrupts(d.on_expiry(ms(105))), "3 of 5 ms: running again");
    }

    #[test]
    fn the_thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_time();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(x > 0);
        assert!(
            thread_cpu_time() > before,
            "50 ms of spinning used no CPU time"
        );
    }
}
