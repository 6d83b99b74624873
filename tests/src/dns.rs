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
    /// The port is free for UDP when picked; if dnsmasq cannot bind it
    /// (its TCP twin taken by another test's connection), another is tried.
    ///
    /// # Panics
    /// When dnsmasq cannot start or does not answer within a minute.
    pub fn start(records: &[String]) -> Self {
        Self::start_when(records, || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free UDP port")
                .port()
        })
    }

    /// Starts it on `port` (again, after [`stop`](Self::stop), with other
    /// records), trying again while the port is not yet free.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_on(port: u16, records: &[String]) -> Self {
        Self::start_when(records, || port)
    }

    /// Starts dnsmasq on `port()` until one answers a DNS query; a
    /// dnsmasq that exits (it could not bind) is replaced by another on
    /// `port()` again.
    fn start_when(records: &[String], port: impl Fn() -> u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let port = port();
            let mut dns = Self {
                child: spawn(port, records),
                port,
            };
            loop {
                if dns.answers() {
                    return dns;
                }
                if let Ok(Some(status)) = dns.child.try_wait() {
                    assert!(
                        Instant::now() < deadline,
                        "dnsmasq on {port} keeps exiting ({status})"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "dnsmasq does not answer on {port}"
                );
            }
        }
    }

    /// Whether it answers a DNS query (any answer, within 200 ms).
    fn answers(&self) -> bool {
        // A query: id 0x5359, recursion desired, one question `up.test` A IN.
        const QUERY: &[u8] =
            b"\x53\x59\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02up\x04test\x00\x00\x01\x00\x01";
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let mut answer = [0u8; 512];
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_ok()
            && socket.send_to(QUERY, ("127.0.0.1", self.port)).is_ok()
            && socket
                .recv(&mut answer)
                .is_ok_and(|n| n >= 2 && answer[..2] == QUERY[..2])
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

/// dnsmasq in the foreground on 127.0.0.1:`port` with only `records`.
fn spawn(port: u16, records: &[String]) -> Child {
    Command::new("dnsmasq")
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
        .expect("dnsmasq (Debian: apt-get install dnsmasq-base)")
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
