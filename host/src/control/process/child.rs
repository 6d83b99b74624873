//! One replica's process: started in its own process group through
//! `switchyard exec-child` (which asks the kernel to kill it when
//! Switchyard dies, `PR_SET_PDEATHSIG`, then becomes the command), its
//! output read line by line into the log and a ring of the last lines, and
//! stopped with the configured signal, then `SIGKILL`.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::ProcessConfig;

/// Lines of output kept per replica.
pub const KEPT_LINES: usize = 50;

/// The last lines a replica wrote (stdout and stderr interleaved).
#[derive(Default)]
pub struct Lines(Mutex<VecDeque<String>>);

impl Lines {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// A copy, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

/// A running replica process.
pub struct Process {
    child: Child,
    /// Its process id (and process group id).
    pub pid: u32,
}

/// `{port}` and `{replica}` of `text` replaced.
fn expand(text: &str, port: u16, replica: u32) -> String {
    text.replace("{port}", &port.to_string())
        .replace("{replica}", &replica.to_string())
}

impl Process {
    /// Starts replica `replica` of `pool` on `port`; its output goes to
    /// the log (tagged with pool and replica) and to `lines` — but its
    /// stdout when `stdio` (an MCP server over stdio: its stdin and stdout
    /// are the caller's, [`take_stdio`](Self::take_stdio)).
    ///
    /// # Errors
    /// The process could not be started (no such program, no permission).
    pub fn start(
        pool: &str,
        replica: u32,
        port: u16,
        config: &ProcessConfig,
        lines: &Arc<Lines>,
        stdio: bool,
    ) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg("exec-child")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--")
            .arg(&config.command)
            .args(config.args.iter().map(|a| expand(a, port, replica)))
            .envs(
                config
                    .env
                    .iter()
                    .map(|(k, v)| (k, expand(v, port, replica))),
            )
            .env("PORT", port.to_string())
            .stdin(if stdio { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a stop signal reaches its children too, and
            // a Ctrl-C meant for Switchyard does not reach it.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        for (stream, reader) in [
            (
                "stdout",
                child
                    .stdout
                    .take_if(|_| !stdio)
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
        ] {
            let Some(reader) = reader else { continue };
            let (lines, pool) = (Arc::clone(lines), pool.to_string());
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    tracing::info!(target: "switchyard::process", pool = %pool, replica, stream, "{line}");
                    lines.push(line);
                }
            });
        }
        Ok(Self { child, pid })
    }

    /// Its stdin and stdout, once (started with `stdio`).
    pub fn take_stdio(&mut self) -> Option<(ChildStdin, ChildStdout)> {
        Some((self.child.stdin.take()?, self.child.stdout.take()?))
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops it: `signal` to its process group, then `SIGKILL` after
    /// `timeout`; its exit status. Whatever is left of the group is killed.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        self.signal(signal);
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    timeout_ms = timeout.as_millis() as u64,
                    "a replica did not stop in time: SIGKILL"
                );
                self.signal(Signal::KILL);
                self.child.wait().await.ok()
            }
        };
        self.signal(Signal::KILL);
        status
    }

    /// Kills what is left of its process group (its children, after it
    /// exited on its own).
    pub fn kill_group(&self) {
        self.signal(Signal::KILL);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            // ESRCH: the group is gone already.
            let _ = kill_process_group(pid, signal);
        }
    }
}

/// The signal a `stop_signal` names (validated at load).
pub fn stop_signal(name: &str) -> Signal {
    match name {
        "SIGINT" => Signal::INT,
        "SIGQUIT" => Signal::QUIT,
        "SIGHUP" => Signal::HUP,
        "SIGUSR1" => Signal::USR1,
        "SIGUSR2" => Signal::USR2,
        _ => Signal::TERM,
    }
}

/// `switchyard exec-child --parent PID -- COMMAND ARGS…`: asks the kernel
/// to `SIGKILL` this process when its parent dies, checks that the parent
/// is still `parent` (it may have died already), and becomes `command`.
///
/// # Errors
/// Why `command` could not be run (only returns on failure).
pub fn exec_child(parent: u32, command: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        return e.into();
    }
    let parent_now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if u32::try_from(parent_now).ok() != Some(parent) {
        return std::io::Error::other("Switchyard exited before the process started");
    }
    let Some((program, args)) = command.split_first() else {
        return std::io::Error::other("no command");
    };
    std::process::Command::new(program).args(args).exec()
}
