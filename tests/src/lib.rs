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
pub mod pki;
pub mod polyglot;
pub mod process;
pub mod schemathesis;
pub mod upstream;

/// Paths of the `.wasm` components built for the tests.
pub mod fixtures {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}
