//! A real `switchyard` process, started on a config file, whose log is read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something to appear in the log. Generous: the
/// machine is small and shared; waits end as soon as the line appears.
pub const LOG_WAIT: Duration = Duration::from_secs(60);

/// The log lines (stderr and stdout) a process has written so far.
#[derive(Default)]
struct Log {
    /// The lines, and how many of the two streams (stderr, stdout) ended.
    lines: Mutex<(Vec<String>, usize)>,
    changed: Condvar,
}

/// A running `switchyard`; killed when dropped.
pub struct Switchyard {
    child: Child,
    log: Arc<Log>,
    /// `http://ip:port` (`https://` with TLS) of the first listener, read
    /// from the log.
    pub url: String,
}

/// Writes `toml` to `config.toml` in `dir` and returns its path.
///
/// # Panics
/// When the file cannot be written (test set-up).
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

impl Switchyard {
    /// Runs `binary serve --config config` and waits until it listens.
    ///
    /// # Panics
    /// When it cannot start or does not listen within [`LOG_WAIT`]; the
    /// message carries its log.
    pub fn serve(binary: &str, config: &Path) -> Self {
        Self::spawn(binary, &["serve", "--config"], config).listening()
    }

    /// Waits until the process listens and records its first listener's URL.
    ///
    /// # Panics
    /// When it does not listen within [`LOG_WAIT`]; the message carries its log.
    #[must_use]
    pub fn listening(self) -> Self {
        let mut process = self;
        let line = process.wait_for_log("listening on http");
        let url = line
            .split("listening on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        process.url = url;
        process
    }

    /// `http://ip:port` (or `https://`) of the admin listener, read from the log.
    ///
    /// # Panics
    /// When the admin API does not start within [`LOG_WAIT`].
    pub fn admin_url(&self) -> String {
        let line = self.wait_for_log("admin API on http");
        line.split("admin API on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes the process has read so far, from files and sockets alike
    /// (`rchar` of `/proc/PID/io`).
    ///
    /// # Panics
    /// When the process's counters cannot be read (it ended).
    pub fn bytes_read(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).expect("/proc/PID/io");
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("rchar in /proc/PID/io")
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `binary ARGS CONFIG` without waiting for anything.
    ///
    /// # Panics
    /// When the process cannot start.
    pub fn spawn(binary: &str, args: &[&str], config: &Path) -> Self {
        let config = config.to_string_lossy();
        let mut all = args.to_vec();
        all.push(&config);
        Self::run(binary, &all)
    }

    /// Runs `binary ARGS` without waiting for anything.
    ///
    /// # Panics
    /// When the process cannot start.
    pub fn run(binary: &str, args: &[&str]) -> Self {
        let mut command = Command::new(binary);
        command.args(args);
        Self::start(command)
    }

    /// Runs `command` (a `switchyard` command line, maybe behind a wrapper
    /// such as `prlimit`, maybe in a working directory of its own) without
    /// waiting for anything; its log is read as [`Switchyard::run`]'s.
    ///
    /// # Panics
    /// When the process cannot start.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard");
        let log = Arc::new(Log::default());
        let readers: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stderr.take().expect("stderr")),
            Box::new(child.stdout.take().expect("stdout")),
        ];
        for reader in readers {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    let mut guard = log.lines.lock().unwrap_or_else(|p| p.into_inner());
                    guard.0.push(line);
                    log.changed.notify_all();
                }
                let mut guard = log.lines.lock().unwrap_or_else(|p| p.into_inner());
                guard.1 += 1;
                log.changed.notify_all();
            });
        }
        Self {
            child,
            log,
            url: String::new(),
        }
    }

    /// Waits until a log line contains `needle` and returns it.
    ///
    /// # Panics
    /// After [`LOG_WAIT`], or when the process's output ends first, with the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for(|line| line.contains(needle), needle)
    }

    /// Waits until a log line satisfies `matches`; `what` names it in a panic.
    ///
    /// # Panics
    /// As [`wait_for_log`](Self::wait_for_log).
    pub fn wait_for(&self, matches: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + LOG_WAIT;
        let mut guard = self.log.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(line) = guard.0.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let now = Instant::now();
            // Both streams ended: nothing more will come.
            if now >= deadline || guard.1 == 2 {
                panic!(
                    "no log line with `{what}`; the log:\n{}",
                    guard.0.join("\n")
                );
            }
            guard = self
                .log
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Sends SIGTERM (through `kill(1)`).
    ///
    /// # Panics
    /// When `kill` cannot run.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to [`LOG_WAIT`].
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not exit; the log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
