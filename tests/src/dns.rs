//! A real DNS server for the discovery tests: Debian's `dnsmasq`
//! (`apt-get install dnsmasq-base`) on a loopback UDP port, answering
//! only the records a test gives it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq; stopped when dropped.
pub struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port of 127.0.0.1 with `records`
    /// (dnsmasq options such as `--srv-host=…` and `--host-record=…`).
    ///
    /// # Panics
    /// When dnsmasq cannot start or does not answer within a minute.
    pub fn start(records: &[String]) -> Self {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        Self::start_on(port, records)
    }

    /// Starts it on `port` (again, after [`stop`](Self::stop), with other
    /// records).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_on(port: u16, records: &[String]) -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "-d",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
            ])
            .args(["--listen-address=127.0.0.1", "-u", "root"])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian: apt-get install dnsmasq-base)");
        let dns = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dns.answers() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq does not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dns
    }

    /// Whether it answers a query (its TCP port accepts).
    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it and waits.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
