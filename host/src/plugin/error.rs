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

/// One call went wrong in a way the plugin did not report as a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The call ran past its epoch deadline.
    #[error("exceeded its call deadline of {deadline_ms} ms")]
    Deadline {
        /// The configured deadline.
        deadline_ms: u64,
    },
    /// The call used up its fuel budget (`fuel_per_call`).
    #[error("used up its fuel budget of {budget} per call")]
    Fuel {
        /// The configured budget.
        budget: u64,
    },
    /// Linear memory would have grown past the cap.
    #[error("exceeded its memory limit of {limit_mib} MiB")]
    Memory {
        /// The configured cap.
        limit_mib: u64,
    },
    /// Any other trap (a guest panic shows as `unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error value instead of a decision.
    #[error("returned an error: {0}")]
    Refused(String),
    /// The call returned something the contract forbids.
    #[error("answered nonsense: {0}")]
    Nonsense(String),
    /// The instance could not be rebuilt after an earlier fault.
    #[error("could not be re-instantiated: {0}")]
    Reinstantiate(String),
    /// Not called: the plugin is quarantined (not a new fault).
    #[error("is quarantined for {remaining_ms} ms more")]
    Quarantined {
        /// Time left in quarantine.
        remaining_ms: u64,
    },
}

impl Fault {
    /// Maps a wasmtime call error under the instance's `limits`. A
    /// memory-cap fault is not told apart here but by the store's limiter
    /// (see the sandbox's call path), which knows it denied a grow.
    pub(crate) fn from_call(err: &wasmtime::Error, limits: &super::Limits) -> Self {
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
}
