//! A real etcd for the discovery tests: Debian's `etcd-server` (one
//! member, on loopback ports, its data in a temporary directory), and a
//! client of its HTTP/JSON API for what the tests write.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A running etcd; stopped when dropped.
pub struct Etcd {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Etcd {
    /// Starts a one-member etcd and waits until it serves.
    ///
    /// # Panics
    /// When etcd cannot start or does not serve within a minute.
    pub fn start() -> Self {
        let (port, peer) = (free_port(), free_port());
        let data = tempfile::tempdir().expect("a data dir");
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(data.path())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian: apt-get install etcd-server)");
        let etcd = Self {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while etcd
            .call(
                "/v3/kv/range",
                &serde_json::json!({ "key": STANDARD.encode("x") }),
            )
            .is_err()
        {
            assert!(Instant::now() < deadline, "etcd does not serve on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// POSTs `body` to `path` of the JSON API; the answer.
    fn call(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let output = Command::new("curl")
            .args(["-sf", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("{}{path}", self.url()))
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("curl: {}", output.status));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
    }

    /// A lease of `ttl_s` seconds (never kept alive): its id.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn lease(&self, ttl_s: u64) -> String {
        let granted = self
            .call("/v3/lease/grant", &serde_json::json!({ "TTL": ttl_s }))
            .expect("a lease");
        granted["ID"].as_str().expect("a lease id").to_string()
    }

    /// Puts `key` = `value`, with `lease` when given.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn put(&self, key: &str, value: &str, lease: Option<&str>) {
        let mut body =
            serde_json::json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) });
        if let Some(lease) = lease {
            body["lease"] = serde_json::json!(lease);
        }
        self.call("/v3/kv/put", &body).expect("put");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
