//! Real MCP servers and a real MCP client: the official Python SDK's
//! FastMCP (`tests/mcp/server.py`) serving streamable HTTP at `/mcp`, and
//! its `ClientSession` (`tests/mcp/client.py`); the SDK pinned in
//! `tests/mcp/requirements.txt`, installed into a virtualenv under
//! `target/mcp/` the first time a test asks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::polyglot::{run, workspace};

/// The Python of the 1.x SDK's virtualenv (installed on first use), to run
/// an MCP server as a pool's process.
pub fn sdk_python() -> PathBuf {
    python(Sdk::Legacy).clone()
}

/// A running MCP server; stopped when dropped.
pub struct McpServer {
    child: Child,
    port: u16,
    sdk: Sdk,
    args: Vec<String>,
}

/// A line of the official Python SDK, each pinned in its own virtualenv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// 1.x (`tests/mcp/requirements.txt`): FastMCP, the session-based
    /// revisions.
    Legacy,
    /// 2.x (`tests/mcp/requirements-modern.txt`): the 2026-07-28 revision.
    Modern,
}

/// The virtualenv's Python of `sdk`, with the pinned SDK installed.
fn python(sdk: Sdk) -> &'static PathBuf {
    static PYTHONS: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    let (slot, venv, requirements) = match sdk {
        Sdk::Legacy => (&PYTHONS[0], "target/mcp/venv", "tests/mcp/requirements.txt"),
        Sdk::Modern => (
            &PYTHONS[1],
            "target/mcp/venv-modern",
            "tests/mcp/requirements-modern.txt",
        ),
    };
    slot.get_or_init(|| {
        let venv = workspace().join(venv);
        let python = venv.join("bin/python");
        if !venv.join("installed").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-r"])
                .arg(workspace().join(requirements)));
            std::fs::write(venv.join("installed"), "").expect("mark the venv");
        }
        python
    })
}

impl McpServer {
    /// Starts the server on a free port of 127.0.0.1 and waits until it
    /// listens.
    ///
    /// # Panics
    /// When Python or the SDK cannot be installed or the server does not
    /// listen within two minutes (test set-up).
    pub fn start() -> Self {
        Self::with(&[])
    }

    /// Starts the server with `server.py`'s options `args` (`--name`,
    /// `--stateless`, `--json`, `--answer`, `--page-size`, `--log`) on a
    /// free port.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn with(args: &[&str]) -> Self {
        let port = crate::free_port();
        Self::launch(
            port,
            Sdk::Legacy,
            args.iter().map(|a| (*a).to_string()).collect(),
        )
    }

    /// Starts `tests/mcp/server_modern.py` (SDK 2.x, the 2026-07-28
    /// revision) named `name` on a free port.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn modern(name: &str) -> Self {
        let port = crate::free_port();
        Self::launch(port, Sdk::Modern, vec![name.to_string()])
    }

    /// Starts the server on `port` of 127.0.0.1 (e.g. again, after
    /// [`stop`](Self::stop)) and waits until it listens.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, Sdk::Legacy, Vec::new())
    }

    /// Starts it again, as it was, on its port (after [`stop`](Self::stop)).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        *self = Self::launch(self.port, self.sdk, self.args.clone());
    }

    fn launch(port: u16, sdk: Sdk, args: Vec<String>) -> Self {
        let script = match sdk {
            Sdk::Legacy => "tests/mcp/server.py",
            Sdk::Modern => "tests/mcp/server_modern.py",
        };
        let child = Command::new(python(sdk))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(workspace().join(script))
            .arg(port.to_string())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the MCP server");
        crate::wait_listening(port, "the MCP server");
        Self {
            child,
            port,
            sdk,
            args,
        }
    }

    /// `http://127.0.0.1:PORT` (its endpoint is `/mcp`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the 1.x SDK's client (`tests/mcp/client.py`) against the MCP
/// endpoint `url` with `steps`; one JSON value per step.
///
/// # Panics
/// When the client fails as a whole (it could not connect or initialize):
/// its output and errors are shown.
pub fn client(url: &str, steps: &serde_json::Value) -> Vec<serde_json::Value> {
    run_client(Sdk::Legacy, url, steps, None)
}

/// As [`client`], sending `headers` (a JSON object) with every request.
///
/// # Panics
/// As [`client`].
pub fn client_with(
    url: &str,
    headers: &serde_json::Value,
    steps: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let options = serde_json::json!({ "headers": headers });
    run_client(Sdk::Legacy, url, steps, Some(&options))
}

/// As [`client`], the session authorized by the SDK's OAuth client
/// (client-credentials grant): `oauth` is `{ client_id, client_secret,
/// scope, issuer }`; the client discovers the authorization server from
/// the server's 401 and its resource metadata.
///
/// # Panics
/// As [`client`].
pub fn oauth_client(
    url: &str,
    oauth: &serde_json::Value,
    steps: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let options = serde_json::json!({ "oauth": oauth });
    run_client(Sdk::Legacy, url, steps, Some(&options))
}

/// Runs the 2.x SDK's client (`tests/mcp/client_modern.py`, which tries
/// the 2026-07-28 revision first) against `url` with `steps`.
///
/// # Panics
/// As [`client`].
pub fn modern_client(url: &str, steps: &serde_json::Value) -> Vec<serde_json::Value> {
    run_client(Sdk::Modern, url, steps, None)
}

fn run_client(
    sdk: Sdk,
    url: &str,
    steps: &serde_json::Value,
    options: Option<&serde_json::Value>,
) -> Vec<serde_json::Value> {
    let script = match sdk {
        Sdk::Legacy => "tests/mcp/client.py",
        Sdk::Modern => "tests/mcp/client_modern.py",
    };
    let output = Command::new(python(sdk))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(workspace().join(script))
        .arg(url)
        .arg(steps.to_string())
        .args(options.map(ToString::to_string))
        .output()
        .expect("the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the MCP client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The TypeScript SDK's reference server, npm
/// `@modelcontextprotocol/server-everything` (pinned with its lock in
/// `tests/mcp/everything/`, installed with `npm ci` into
/// `target/mcp/everything/` the first time a test asks), serving
/// streamable HTTP at `/mcp`; stopped when dropped.
pub struct Everything {
    child: Child,
    port: u16,
}

impl Everything {
    /// Starts it on a free port of 127.0.0.1 and waits until it listens.
    ///
    /// # Panics
    /// When npm cannot install it or it does not listen within two minutes
    /// (test set-up).
    pub fn start() -> Self {
        static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
        let dir = INSTALLED.get_or_init(|| {
            let dir = workspace().join("target/mcp/everything");
            if !dir.join("node_modules/.package-lock.json").exists() {
                std::fs::create_dir_all(&dir).expect("target/mcp/everything");
                for file in ["package.json", "package-lock.json"] {
                    std::fs::copy(
                        workspace().join("tests/mcp/everything").join(file),
                        dir.join(file),
                    )
                    .expect("copy the pinned package");
                }
                run(Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir));
            }
            dir.clone()
        });
        let port = crate::free_port();
        let child = Command::new("node")
            .arg(dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (Debian: apt-get install nodejs npm)");
        crate::wait_listening(port, "server-everything");
        Self { child, port }
    }

    /// `http://127.0.0.1:PORT` (its endpoint is `/mcp`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
