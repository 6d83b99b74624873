//! Schemathesis, the OpenAPI-driven API tester, from PyPI (the version
//! pinned in `tests/schemathesis/requirements.txt`), installed the first
//! time a test asks for it into a virtualenv under `target/schemathesis/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::polyglot::{run, workspace};

/// `tests/schemathesis/`: the pinned requirements and the checks' config.
pub fn dir() -> PathBuf {
    workspace().join("tests").join("schemathesis")
}

/// The `st` command of the virtualenv (Python 3 with `venv` and `pip`
/// needed).
pub fn st() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let venv = workspace().join("target").join("schemathesis").join("venv");
        let st = venv.join("bin").join("st");
        if !st.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-r"])
                .arg(dir().join("requirements.txt")));
        }
        st
    })
}
