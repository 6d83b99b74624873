//! Support for Switchyard's integration tests (`tests/all`): real upstream
//! HTTP servers on loopback ephemeral ports whose behaviour a test changes,
//! a real `switchyard` process whose log a test reads, and the paths of the
//! plugin components built from source by this crate's build script.

pub mod dns;
pub mod etcd;
pub mod grpc;
pub mod jwt;
pub mod mcp;
pub mod nginx;
pub mod oidc;
pub mod pki;
pub mod polyglot;
pub mod process;
pub mod redis;
pub mod schemathesis;
pub mod upstream;

/// A free port of 127.0.0.1 (bound, then let go, for a server a test
/// starts to take).
///
/// # Panics
/// When no port can be bound (test set-up).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something listens on 127.0.0.1:`port`, polling, at most
/// two minutes (a server of `what` starting).
///
/// # Panics
/// When nothing listens by then (test set-up).
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Paths of the `.wasm` components built for the tests.
pub mod fixtures {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}
