//! The example plugins written in Python and JavaScript, built from source
//! with their languages' own toolchains the first time a test asks for them
//! (once per test process, into `target/polyglot/`):
//!
//! - Python: a virtualenv with `componentize-py` from PyPI (the version
//!   pinned in the plugin's `requirements.txt`), then
//!   `componentize-py componentize`.
//! - JavaScript: `npm install` of the plugin's pinned `componentize-js`
//!   (from its lock file), then its `build.mjs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `plugins/NAME` of the workspace: an example plugin's sources.
pub fn source(name: &str) -> PathBuf {
    workspace().join("plugins").join(name)
}

/// `target/polyglot/`, created.
fn out_dir() -> PathBuf {
    let dir = workspace().join("target").join("polyglot");
    std::fs::create_dir_all(&dir).expect("create target/polyglot");
    dir
}

/// Runs `command`, panicking with its output when it fails.
pub(crate) fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// componentize-py as `plugins/py-weighted-rr/requirements.txt` pins it,
/// in a virtualenv under `target/polyglot/` (made on first use).
pub fn componentize_py() -> PathBuf {
    let venv = out_dir().join("venv");
    let componentize = venv.join("bin/componentize-py");
    if !componentize.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(source("py-weighted-rr").join("requirements.txt")));
    }
    componentize
}

/// `plugins/py-weighted-rr` built with componentize-py (Python 3 with
/// `venv` and `pip` needed).
pub fn python_balancer() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| componentize("py-weighted-rr", "balancer-plugin"))
}

/// `plugins/py-agent-guard` (a filter) built with componentize-py.
pub fn python_filter() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| componentize("py-agent-guard", "filter-plugin"))
}

/// The Python plugin `plugins/NAME` (module `app`) built as `world` into
/// `target/polyglot/NAME.wasm` (`-` as `_`).
fn componentize(name: &str, world: &str) -> PathBuf {
    let componentize = componentize_py();
    let out = out_dir().join(format!("{}.wasm", name.replace('-', "_")));
    run(Command::new(componentize)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-d")
        .arg(workspace().join("wit"))
        .args(["-w", world, "componentize", "-p"])
        .arg(source(name))
        .args(["app", "-o"])
        .arg(&out));
    out
}

/// `plugins/js-session-hash` built with componentize-js (Node.js and npm
/// needed).
pub fn js_balancer() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        componentize_js(
            &source("js-session-hash").join("session-hash.js"),
            "js_session_hash",
            "balancer-plugin",
        )
    })
}

/// `plugins/js-prompt-guard` (a filter) built with componentize-js, by
/// the toolchain `plugins/js-session-hash` pins.
pub fn js_filter() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        componentize_js(
            &source("js-prompt-guard").join("prompt-guard.js"),
            "js_prompt_guard",
            "filter-plugin",
        )
    })
}

/// The JavaScript module `file` built as `world` into
/// `target/polyglot/NAME.wasm` with `plugins/js-session-hash`'s
/// componentize-js and `build.mjs` (`npm install`ed there on first use).
fn componentize_js(file: &Path, name: &str, world: &str) -> PathBuf {
    let toolchain = source("js-session-hash");
    // Installed once per process, whichever build comes first.
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if !toolchain
            .join("node_modules/@bytecodealliance/componentize-js")
            .exists()
        {
            // `npm install`, not `npm ci`: the lock pins every package this
            // platform installs, but the registry has no metadata for some
            // optional native packages of other platforms, which `npm ci`
            // then reports as missing from the lock.
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(&toolchain));
        }
    });
    let out = out_dir().join(format!("{name}.wasm"));
    run(Command::new("node")
        .arg("build.mjs")
        .arg(file)
        .arg(&out)
        .arg(world)
        .current_dir(&toolchain));
    out
}
