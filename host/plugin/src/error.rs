//! The two ways a plugin goes wrong: refused at load, or faulting at a call.
//!
//! Wasmtime errors become one of these in this module only, so the engines
//! never inspect wasmtime types.

use std::path::PathBuf;

use wasmtime::Trap;

/// A plugin was refused at load; the message names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin `{}`: cannot read: {error}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The bytes are not a component wasmtime can compile.
    #[error("plugin `{}`: not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The plugin file.
        path: PathBuf,
        /// What the compiler said, with a hint for core modules.
        reason: String,
    },
    /// The component does not export the world this slot needs.
    #[error("plugin `{}`: {reason}", path.display())]
    WrongWorld {
        /// The plugin file.
        path: PathBuf,
        /// Which export is missing and what the component exports instead.
        reason: String,
    },
    /// Linking, instantiating or the plugin's `configure` failed.
    #[error("plugin `{}`: {reason}", path.display())]
    Rejected {
        /// The plugin file.
        path: PathBuf,
        /// The reason, including the plugin's own `invalid-config` text.
        reason: String,
    },
}

pub use switchyard_engines::policy::Fault;

/// Maps a wasmtime call error under the instance's `limits`: the one place
/// where wasmtime's errors become [`Fault`]s. A memory-cap fault is not told
/// apart here but by the store's limiter (see the sandbox's call path),
/// which knows it denied a grow.
pub(crate) fn fault_from_call(err: &wasmtime::Error, limits: &super::Limits) -> Fault {
    let deadline_ms = limits.call_deadline_ms;
    let root = err.root_cause().to_string();
    let root = root.lines().next().unwrap_or_default();
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Deadline { deadline_ms },
        Some(Trap::OutOfFuel) => Fault::Fuel {
            budget: limits.fuel_per_call.unwrap_or(u64::MAX),
        },
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(root.to_string()),
    }
}
