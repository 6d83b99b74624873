//! A real OpenID provider: panva's `oidc-provider` (npm, certified for
//! OpenID Connect and OAuth 2.0; pinned with its lock in `tests/oidc/`,
//! installed with `npm ci` into `target/oidc/` the first time a test
//! asks), run by `tests/oidc/provider.mjs`: JWT access tokens (ES256) for
//! the client-credentials grant, its JWKS at `/jwks`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::polyglot::{run, workspace};

/// A running provider; stopped when dropped.
pub struct OidcProvider {
    child: Child,
    port: u16,
}

impl OidcProvider {
    /// Starts it on a free port of 127.0.0.1, signing with a new key
    /// named `kid`, and waits until it listens.
    ///
    /// # Panics
    /// When npm cannot install it or it does not listen within two minutes
    /// (test set-up).
    pub fn start(kid: &str) -> Self {
        let port = crate::free_port();
        Self {
            child: spawn(port, kid),
            port,
        }
    }

    /// Stops it and starts it again on the same port with a new key named
    /// `kid`: a key rotation.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn rotate(&mut self, kid: &str) {
        self.stop();
        self.child = spawn(self.port, kid);
    }

    /// Stops it (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An access token for `resource` with `scope`, by the
    /// client-credentials grant (client `svc`).
    ///
    /// # Panics
    /// When the provider does not issue one.
    pub fn token(&self, resource: &str, scope: &str) -> String {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-u", "svc:secret"])
            .args(["-d", "grant_type=client_credentials"])
            .args(["-d", &format!("scope={scope}")])
            .args(["-d", &format!("resource={resource}")])
            .arg(format!("{}/token", self.issuer()))
            .output()
            .expect("curl");
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {answer}"))
            .to_owned()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `target/oidc/`, the pinned package installed there once.
fn installed() -> &'static PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = workspace().join("target/oidc");
        std::fs::create_dir_all(&dir).expect("target/oidc");
        if !dir.join("node_modules/.package-lock.json").exists() {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(workspace().join("tests/oidc").join(file), dir.join(file))
                    .expect("copy the pinned package");
            }
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir));
        }
        // Next to its node_modules, so that its import resolves.
        std::fs::copy(
            workspace().join("tests/oidc/provider.mjs"),
            dir.join("provider.mjs"),
        )
        .expect("copy provider.mjs");
        dir
    })
}

fn spawn(port: u16, kid: &str) -> Child {
    let child = Command::new("node")
        .arg(installed().join("provider.mjs"))
        .args([&port.to_string(), kid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node (Debian: apt-get install nodejs npm)");
    crate::wait_listening(port, "oidc-provider");
    child
}
