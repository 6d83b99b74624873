//! A real etcd for the discovery and replica tests: Debian's
//! `etcd-server` (one member or a cluster, on loopback ports, its data in
//! a temporary directory; members killed and started again), and a client
//! of its HTTP/JSON API for what the tests write.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A running etcd cluster (one member or more); stopped when dropped.
pub struct Etcd {
    members: Vec<Member>,
    /// With TLS: the CA, etcd's certificate, and the client certificate
    /// curl shows.
    tls: Option<Tls>,
    _data: tempfile::TempDir,
}

struct Tls {
    ca: PathBuf,
    server: crate::pki::Issued,
    client: crate::pki::Issued,
}

/// One member: its ports and data directory stay across a stop and start.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a one-member etcd and waits until it serves.
    ///
    /// # Panics
    /// When etcd cannot start or does not serve within a minute.
    pub fn start() -> Self {
        Self::cluster(1)
    }

    /// Starts an etcd cluster of `size` members and waits until each serves.
    ///
    /// # Panics
    /// When etcd cannot start or does not serve within a minute.
    pub fn cluster(size: usize) -> Self {
        let data = tempfile::tempdir().expect("a data dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: crate::free_port(),
                peer: crate::free_port(),
                child: None,
            })
            .collect();
        Self::launch(members, None, data)
    }

    /// Starts a one-member etcd serving clients over TLS only, with
    /// `server` (a certificate of `pki` for `127.0.0.1`), requiring a
    /// client certificate of `pki` (`--client-cert-auth`); curl shows
    /// `client`.
    ///
    /// # Panics
    /// When etcd cannot start or does not serve within a minute.
    pub fn start_tls(
        pki: &crate::pki::Pki,
        server: crate::pki::Issued,
        client: crate::pki::Issued,
    ) -> Self {
        let data = tempfile::tempdir().expect("a data dir");
        let members = vec![Member {
            name: "m0".into(),
            client: crate::free_port(),
            peer: crate::free_port(),
            child: None,
        }];
        let tls = Tls {
            ca: pki.ca_file(),
            server,
            client,
        };
        Self::launch(members, Some(tls), data)
    }

    fn launch(members: Vec<Member>, tls: Option<Tls>, data: tempfile::TempDir) -> Self {
        let size = members.len();
        let mut etcd = Self {
            members,
            tls,
            _data: data,
        };
        for i in 0..size {
            etcd.start_member(i);
        }
        for i in 0..size {
            etcd.wait_serving(i);
        }
        etcd
    }

    /// Starts member `i` again (on its data: it rejoins the cluster).
    ///
    /// # Panics
    /// When etcd cannot start.
    pub fn start_member(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let member = &self.members[i];
        let client = format!("{}://127.0.0.1:{}", self.scheme(), member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.cert_file)
                .arg("--key-file")
                .arg(&tls.server.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name, "--data-dir"])
            .arg(self._data.path().join(&member.name))
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
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "switchyard-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian: apt-get install etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` answers reads (it has a leader).
    ///
    /// # Panics
    /// After a minute.
    pub fn wait_serving(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let body = serde_json::json!({ "key": STANDARD.encode("x") });
        while self.call_member(i, "/v3/kv/range", &body).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd member {i} does not serve on {}",
                self.members[i].client
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member.
    pub fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Starts every member again and waits until each serves.
    pub fn restart(&mut self) {
        for i in 0..self.members.len() {
            self.start_member(i);
        }
        for i in 0..self.members.len() {
            self.wait_serving(i);
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URLs of every member.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    /// Turns on etcd's authentication with user `root` (password
    /// `password`): from then on every request needs a token.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn enable_auth(&self, password: &str) {
        let call = |path: &str, body: serde_json::Value| {
            self.call(path, &body)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        call(
            "/v3/auth/user/add",
            serde_json::json!({ "name": "root", "password": password }),
        );
        call(
            "/v3/auth/user/grant",
            serde_json::json!({ "user": "root", "role": "root" }),
        );
        call("/v3/auth/enable", serde_json::json!({}));
    }

    /// Compacts the history up to the current revision: a watch from an
    /// older revision is told so.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn compact(&self) {
        let header = self
            .call(
                "/v3/kv/range",
                &serde_json::json!({ "key": STANDARD.encode("x") }),
            )
            .expect("a read");
        let revision = header["header"]["revision"].clone();
        self.call(
            "/v3/kv/compaction",
            &serde_json::json!({ "revision": revision, "physical": true }),
        )
        .expect("compaction");
    }

    /// `http://127.0.0.1:PORT` of the first member.
    pub fn url(&self) -> String {
        self.urls().swap_remove(0)
    }

    /// POSTs `body` to `path` of the JSON API of the first member that
    /// answers; the answer.
    fn call(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let mut last = String::from("no member runs");
        for i in (0..self.members.len()).filter(|i| self.members[*i].child.is_some()) {
            match self.call_member(i, path, body) {
                Ok(answer) => return Ok(answer),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    fn call_member(
        &self,
        i: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let mut curl = Command::new("curl");
        if let Some(tls) = &self.tls {
            curl.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client.cert_file)
                .arg("--key")
                .arg(&tls.client.key_file);
        }
        let output = curl
            .args(["-sf", "-m", "5", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!(
                "{}://127.0.0.1:{}{path}",
                self.scheme(),
                self.members[i].client
            ))
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

    /// Every key under `prefix`, in order.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let range = self
            .call(
                "/v3/kv/range",
                &serde_json::json!({ "key": STANDARD.encode(prefix), "range_end": STANDARD.encode(end), "keys_only": true }),
            )
            .expect("range");
        range["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| kv["key"].as_str())
            .filter_map(|k| STANDARD.decode(k).ok())
            .filter_map(|k| String::from_utf8(k).ok())
            .collect()
    }

    /// Deletes every key under `prefix`.
    ///
    /// # Panics
    /// When etcd refuses.
    pub fn delete_prefix(&self, prefix: &str) {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        self.call(
            "/v3/kv/deleterange",
            &serde_json::json!({ "key": STANDARD.encode(prefix), "range_end": STANDARD.encode(end) }),
        )
        .expect("delete");
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
        self.stop();
    }
}
