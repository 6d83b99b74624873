//! # switchyard-sdk-build: compile plugin crates from a build script
//!
//! Compiles Switchyard plugin crates (crate type `cdylib`, written with
//! `switchyard-sdk`) to `wasm32-wasip2` components by running a nested
//! `cargo build --release --target wasm32-wasip2` in its own target directory,
//! so it never contends with the outer build's directory lock. The host uses
//! it to embed the demo plugin; the integration tests use it to build their
//! fixtures, as wasmtime's `test-programs/artifacts` build script does.
//!
//! ```ignore
//! // build.rs
//! let built = switchyard_sdk_build::Components::new(workspace_root)
//!     .package("plugins/canary-split")
//!     .build()?;
//! println!("cargo:rustc-env=CANARY={}", built[0].path.display());
//! ```

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compilation target of every plugin.
pub const TARGET: &str = "wasm32-wasip2";

/// A set of plugin packages of one cargo workspace to compile together.
#[derive(Debug, Clone)]
pub struct Components {
    workspace_root: PathBuf,
    packages: Vec<String>,
}

/// One compiled component.
#[derive(Debug, Clone)]
pub struct Built {
    /// The cargo package name, e.g. `canary-split`.
    pub package: String,
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
}

/// Why compiling the plugins failed.
#[derive(Debug)]
pub enum BuildError {
    /// `cargo` could not be started.
    Spawn(std::io::Error),
    /// `cargo build` exited non-zero; its stderr was passed through.
    Failed {
        /// The exit status as cargo reported it.
        status: std::process::ExitStatus,
        /// Whether the `wasm32-wasip2` target looks missing from the toolchain.
        target_missing: bool,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Spawn(e) => write!(f, "could not run cargo to build plugins: {e}"),
            BuildError::Failed {
                status,
                target_missing,
            } => {
                write!(f, "building plugins for {TARGET} failed ({status})")?;
                if *target_missing {
                    write!(
                        f,
                        "; the target is not installed: run `rustup target add {TARGET}`"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BuildError {}

impl Components {
    /// Packages of the workspace rooted at `workspace_root` (the directory of
    /// the workspace `Cargo.toml`).
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            packages: Vec::new(),
        }
    }

    /// Adds the package in `dir` (relative to the workspace root, e.g.
    /// `plugins/canary-split`); by convention its name is the directory's last
    /// component. The directory is watched for changes.
    pub fn package(mut self, dir: &str) -> Self {
        rerun_if_changed(&self.workspace_root.join(dir));
        let name = dir.rsplit('/').next().unwrap_or(dir);
        self.packages.push(name.to_string());
        self
    }

    /// The target directory used: `<workspace>/target/wasm-plugins`.
    pub fn target_dir(&self) -> PathBuf {
        self.workspace_root.join("target").join("wasm-plugins")
    }

    /// Compiles every package (release profile, debug info stripped) and
    /// prints the `cargo:rerun-if-changed` lines for the WIT, the SDK and the
    /// packages' sources.
    ///
    /// # Errors
    /// [`BuildError`] when cargo cannot start or the build fails (cargo's own
    /// diagnostics are on stderr).
    pub fn build(&self) -> Result<Vec<Built>, BuildError> {
        for watched in ["wit", "sdk/src", "sdk/Cargo.toml", "Cargo.lock"] {
            rerun_if_changed(&self.workspace_root.join(watched));
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        scrub_outer_build_env(&mut cmd);
        cmd.current_dir(&self.workspace_root)
            .args(["build", "--release", "--locked", "--target", TARGET])
            .arg("--target-dir")
            .arg(self.target_dir())
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        for package in &self.packages {
            cmd.args(["-p", package]);
        }
        let output = cmd.output().map_err(BuildError::Spawn)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            eprintln!("{stderr}");
            return Err(BuildError::Failed {
                status: output.status,
                target_missing: stderr.contains("target may not be installed")
                    || stderr.contains("can't find crate for `core`")
                    || stderr.contains("can't find crate for `std`"),
            });
        }
        let out_dir = self.target_dir().join(TARGET).join("release");
        Ok(self
            .packages
            .iter()
            .map(|package| Built {
                package: package.clone(),
                path: out_dir.join(format!("{}.wasm", package.replace('-', "_"))),
            })
            .collect())
    }
}

/// Removes what the outer cargo set for this build script that would leak into
/// the nested build: flags and wrappers for the host target (clippy's
/// `RUSTC_WORKSPACE_WRAPPER` among them) and the outer target settings. The
/// jobserver (`CARGO_MAKEFLAGS`) and `CARGO_HOME` are kept.
fn scrub_outer_build_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS");
        let outer = key.starts_with("CARGO_")
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
            );
        if outer && !keep {
            cmd.env_remove(key);
        }
    }
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
