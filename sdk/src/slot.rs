//! Where an exported plugin keeps its state between calls.

use std::cell::RefCell;

use crate::PluginError;

/// The plugin value of one component instance, set by `configure`.
///
/// A component instance is single-threaded, so a `thread_local!` holding a
/// `Slot` is the whole state store; the export macros declare it.
pub struct Slot<T>(RefCell<Option<T>>);

impl<T> Slot<T> {
    /// An empty slot (before `configure`).
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }

    /// Stores the plugin `made` by `configure` and returns `describe` of it,
    /// or passes the configuration error on (the slot stays as it was).
    pub fn install<R>(
        &self,
        made: Result<T, PluginError>,
        describe: impl FnOnce(&T) -> R,
    ) -> Result<R, PluginError> {
        let plugin = made?;
        let answer = describe(&plugin);
        *self.0.borrow_mut() = Some(plugin);
        Ok(answer)
    }

    /// Runs `f` on the configured plugin.
    ///
    /// # Panics
    /// If the host calls before `configure` succeeded (a host bug); the panic
    /// traps the call and the host counts a fault.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut state = self.0.borrow_mut();
        let plugin = state
            .as_mut()
            .expect("switchyard plugin called before a successful configure");
        f(plugin)
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}
