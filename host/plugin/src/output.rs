//! What a plugin writes — stdout, stderr (a panic message goes there) and
//! `host.log` — bounded per call and per second, so that a chatty plugin
//! can neither fill the log nor slow the data path:
//!
//! - per call, the first [`KEPT_PER_CALL`] bytes are kept and the rest
//!   dropped (counted); past [`FAULT_PER_CALL`] bytes the write traps and the
//!   call is a fault;
//! - per plugin, at most [`LINES_PER_SECOND`] lines a second reach the log;
//!   the rest are dropped (counted);
//! - the dropped bytes and lines show in `/v1/status` and `/metrics`.
//!
//! Each complete line becomes one `tracing` event tagged with the plugin's
//! name (stdout at `info`, stderr at `warn`); a line longer than
//! [`MAX_LINE`] bytes is cut there. The last stderr lines of a call are kept
//! apart, so that a fault's message can carry a panic's text even when its
//! log lines were dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bindings::Level;

/// Longest line kept, bytes; the rest of a longer line starts a new one.
pub const MAX_LINE: usize = 4096;
/// Output bytes of one call that are kept; the rest are dropped.
pub const KEPT_PER_CALL: usize = 4096;
/// Output bytes of one call past which the call is a fault.
pub const FAULT_PER_CALL: usize = 64 * 1024;
/// Lines a plugin may write to the log per second.
pub const LINES_PER_SECOND: u32 = 20;
/// Stderr lines of a call kept for a fault's message.
const RECENT_LINES: usize = 4;
/// Longest stderr line kept for a fault's message, bytes.
const RECENT_LINE: usize = 512;

/// Which stream a write went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
}

/// Lines logged in the current one-second window.
#[derive(Debug, Clone, Copy)]
struct LineRate {
    start: Instant,
    lines: u32,
}

impl LineRate {
    /// Whether one more line may be logged at `now`.
    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.start) >= Duration::from_secs(1) {
            *self = Self {
                start: now,
                lines: 0,
            };
        }
        self.lines += 1;
        self.lines <= LINES_PER_SECOND
    }
}

/// A plugin's output rate and what was dropped, shared by its instances.
#[derive(Debug)]
pub struct OutputStats {
    rate: Mutex<LineRate>,
    dropped_bytes: AtomicU64,
    dropped_lines: AtomicU64,
}

impl Default for OutputStats {
    fn default() -> Self {
        Self {
            rate: Mutex::new(LineRate {
                start: Instant::now(),
                lines: 0,
            }),
            dropped_bytes: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
        }
    }
}

impl OutputStats {
    /// Output bytes dropped over the per-call bound.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes.load(Ordering::Relaxed)
    }

    /// Lines dropped over the per-second rate.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    /// Whether one more line may be logged now (a line that may not is
    /// counted as dropped).
    fn admit_line(&self) -> bool {
        let admitted = self
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now());
        if !admitted {
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }
}

/// The output of one plugin instance: partial lines, this call's byte
/// count, and this call's last stderr lines.
#[derive(Debug, Default)]
pub struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes written in the current call.
    written: usize,
    /// The current call's last stderr lines (cut), oldest first.
    recent: VecDeque<String>,
}

/// A write that made the call a fault.
#[derive(Debug, thiserror::Error)]
#[error("the plugin wrote more than {FAULT_PER_CALL} bytes of output in one call")]
pub struct TooMuchOutput;

impl Captured {
    /// Starts a call: its byte count and recent lines start over.
    pub fn start_call(&mut self) {
        self.written = 0;
        self.recent.clear();
    }

    /// The current call's last stderr lines, ` | `-joined (empty if none).
    pub fn recent_stderr(&self) -> String {
        self.recent
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Counts `len` bytes of this call; returns how many of them to keep.
    ///
    /// # Errors
    /// [`TooMuchOutput`] past [`FAULT_PER_CALL`].
    fn budget(&mut self, len: usize, stats: &OutputStats) -> Result<usize, TooMuchOutput> {
        let before = self.written;
        self.written = self.written.saturating_add(len);
        if self.written > FAULT_PER_CALL {
            return Err(TooMuchOutput);
        }
        let kept = KEPT_PER_CALL.saturating_sub(before).min(len);
        stats
            .dropped_bytes
            .fetch_add((len - kept) as u64, Ordering::Relaxed);
        Ok(kept)
    }

    /// `bytes` written by `plugin` to `stream`: complete lines are logged
    /// (within the rates), a partial one is kept for the next write.
    ///
    /// # Errors
    /// [`TooMuchOutput`]: the call is a fault.
    pub fn write(
        &mut self,
        plugin: &str,
        stats: &OutputStats,
        stream: Stream,
        bytes: &[u8],
    ) -> Result<(), TooMuchOutput> {
        let kept = self.budget(bytes.len(), stats)?;
        let buffer = match stream {
            Stream::Stderr => &mut self.stderr,
            Stream::Stdout => &mut self.stdout,
        };
        buffer.extend_from_slice(&bytes[..kept]);
        while let Some(end) = buffer
            .iter()
            .position(|b| *b == b'\n')
            .or((buffer.len() >= MAX_LINE).then_some(MAX_LINE))
        {
            let line = String::from_utf8_lossy(&buffer[..end.min(MAX_LINE)]);
            let line = line.trim_end_matches('\r');
            if stream == Stream::Stderr && !line.trim().is_empty() {
                if self.recent.len() == RECENT_LINES {
                    self.recent.pop_front();
                }
                self.recent.push_back(cut(line, RECENT_LINE).to_string());
            }
            if stats.admit_line() {
                match stream {
                    Stream::Stderr => {
                        tracing::warn!(target: "switchyard::plugin", plugin, stream = "stderr", "{line}");
                    }
                    Stream::Stdout => {
                        tracing::info!(target: "switchyard::plugin", plugin, stream = "stdout", "{line}");
                    }
                }
            }
            let consumed = if end < buffer.len() && buffer[end] == b'\n' {
                end + 1
            } else {
                end
            };
            buffer.drain(..consumed);
        }
        Ok(())
    }

    /// A `host.log` call of `plugin`: logged at `level` within the rates.
    ///
    /// # Errors
    /// [`TooMuchOutput`]: the call is a fault.
    pub fn log(
        &mut self,
        plugin: &str,
        stats: &OutputStats,
        level: Level,
        message: &str,
    ) -> Result<(), TooMuchOutput> {
        let kept = self.budget(message.len(), stats)?;
        if kept < message.len() || !stats.admit_line() {
            return Ok(());
        }
        match level {
            Level::Trace => tracing::trace!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "switchyard::plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_are_emitted_and_partial_ones_kept() {
        let (mut captured, stats) = (Captured::default(), OutputStats::default());
        captured
            .write("p", &stats, Stream::Stdout, b"one\ntw")
            .unwrap();
        assert_eq!(captured.stdout, b"tw");
        captured
            .write("p", &stats, Stream::Stdout, b"o\r\n")
            .unwrap();
        assert!(captured.stdout.is_empty());
        captured.write("p", &stats, Stream::Stderr, b"err").unwrap();
        assert_eq!(captured.stderr, b"err");
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let (mut captured, stats) = (Captured::default(), OutputStats::default());
        captured
            .write("p", &stats, Stream::Stdout, &vec![b'x'; MAX_LINE + 10])
            .unwrap();
        assert!(captured.stdout.is_empty(), "kept: the first 4096 bytes");
        assert_eq!(stats.dropped_bytes(), 10);
    }

    #[test]
    fn a_call_keeps_its_first_bytes_and_faults_past_the_cap() {
        let (mut captured, stats) = (Captured::default(), OutputStats::default());
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..8 {
            captured.write("p", &stats, Stream::Stdout, &line).unwrap();
        }
        assert_eq!(stats.dropped_bytes(), 4096);
        for _ in 0..56 {
            captured.write("p", &stats, Stream::Stdout, &line).unwrap();
        }
        assert!(captured.write("p", &stats, Stream::Stdout, b"!").is_err());
        captured.start_call();
        captured
            .write("p", &stats, Stream::Stdout, b"fresh\n")
            .unwrap();
    }

    #[test]
    fn lines_past_the_rate_wait_for_the_next_second() {
        let start = Instant::now();
        let mut rate = LineRate { start, lines: 0 };
        let admitted = (0..30).filter(|_| rate.admit(start)).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert!(rate.admit(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_call_remembers_its_last_stderr_lines() {
        let (mut captured, stats) = (Captured::default(), OutputStats::default());
        for i in 0..6 {
            captured
                .write(
                    "p",
                    &stats,
                    Stream::Stderr,
                    format!("line {i}\n").as_bytes(),
                )
                .unwrap();
        }
        assert_eq!(
            captured.recent_stderr(),
            "line 2 | line 3 | line 4 | line 5"
        );
        captured.start_call();
        assert_eq!(captured.recent_stderr(), "");
    }
}
