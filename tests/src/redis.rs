//! A real Redis server: Debian's `redis-server` on a free port of
//! 127.0.0.1, without persistence.

use std::process::{Child, Command, Stdio};

/// A running Redis server; stopped when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one and waits until it listens.
    ///
    /// # Panics
    /// When `redis-server` cannot start or does not listen within two
    /// minutes (test set-up).
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    /// As [`start`](Self::start), with more `redis-server` arguments
    /// (`--requirepass PASSWORD`).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn with_args(args: &[&str]) -> Self {
        let port = crate::free_port();
        Self {
            child: spawn(port, args),
            port,
            args: args.iter().map(ToString::to_string).collect(),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(self.port, &args);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, args: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian: apt-get install redis-server)");
    crate::wait_listening(port, "redis-server");
    child
}
