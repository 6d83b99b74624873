//! The WASI subset a plugin gets: its stdout and stderr, and a hash seed.
//!
//! - **Output**: a guest's standard library writes through `wasi:cli/stdout`,
//!   `wasi:cli/stderr` and `wasi:io/streams` (a panic message goes to
//!   stderr). Each complete line becomes one `tracing` event tagged with the
//!   plugin's name (stdout at `info`, stderr at `warn`); a line longer than
//!   [`MAX_LINE`] bytes is cut there.
//! - **Hash seed**: `wasi:random/insecure-seed`, which Rust's `HashMap`
//!   needs for its keys, returns a seed the host draws per call. It is not a
//!   source of secrets and the plugin gets no other randomness.
//!
//! Every other WASI import is linked to a stub that traps when called, so a
//! plugin has no files, sockets, clocks, environment or random bytes.
//!
//! Why not `wasmtime-wasi`: its synchronous bindings block on a Tokio runtime
//! from inside the host call, which panics on a Tokio worker thread (where
//! every plugin call of the data path runs); its async bindings make every
//! plugin call async and slower. Two output streams need neither.

use wasmtime::component::{
    Component, ComponentType, Linker, LinkerInstance, Lower, Resource, ResourceType,
};

use super::bindings::PluginState;

/// Longest line kept, bytes; the rest of a longer line starts a new one.
pub const MAX_LINE: usize = 4096;

/// Marker type of the `output-stream` resource handed to guests.
pub struct OutputStream;

/// Marker type of the `wasi:io/poll.pollable` resource of an output stream.
pub struct Pollable;

/// Marker type of the `wasi:io/error.error` resource (never created).
pub struct IoError;

const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// `wasi:io/streams.stream-error`; the host never fails a write, but the type
/// must match the guest's import.
#[derive(ComponentType, Lower)]
#[component(variant)]
#[allow(
    dead_code,
    reason = "the host never fails a write; the type exists for the signature"
)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

type StreamResult<T> = wasmtime::Result<(Result<T, StreamError>,)>;

/// One plugin's partial output lines.
#[derive(Debug, Default)]
pub struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Captured {
    fn write(&mut self, plugin: &str, stream: u32, bytes: &[u8]) {
        let buffer = if stream == STDERR {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        buffer.extend_from_slice(bytes);
        while let Some(end) = buffer
            .iter()
            .position(|b| *b == b'\n')
            .or((buffer.len() >= MAX_LINE).then_some(MAX_LINE))
        {
            let line = String::from_utf8_lossy(&buffer[..end.min(MAX_LINE)]);
            let line = line.trim_end_matches('\r');
            if stream == STDERR {
                tracing::warn!(target: "switchyard::plugin", plugin, stream = "stderr", "{line}");
            } else {
                tracing::info!(target: "switchyard::plugin", plugin, stream = "stdout", "{line}");
            }
            let consumed = if end < buffer.len() && buffer[end] == b'\n' {
                end + 1
            } else {
                end
            };
            buffer.drain(..consumed);
        }
    }
}

/// Links the WASI subset for the versions `component` imports, then
/// every other import of it to a trapping stub.
///
/// # Errors
/// When wasmtime refuses a definition (a guest importing an incompatible shape
/// of these interfaces).
pub fn add_to_linker(
    linker: &mut Linker<PluginState>,
    component: &Component,
) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for name in &imports {
        // An interface that `use`s a resource re-exports its type, so the
        // resource is defined in every instance that names it.
        if let Some(getter) = [
            ("wasi:cli/stdout@0.2.", "get-stdout", STDOUT),
            ("wasi:cli/stderr@0.2.", "get-stderr", STDERR),
        ]
        .into_iter()
        .find(|(prefix, _, _)| name.starts_with(prefix))
        {
            let (_, function, rep) = getter;
            let mut instance = linker.instance(name)?;
            instance.resource(
                "output-stream",
                ResourceType::host::<OutputStream>(),
                |_, _| Ok(()),
            )?;
            instance.func_wrap(function, move |_, (): ()| {
                Ok((Resource::<OutputStream>::new_own(rep),))
            })?;
        } else if name.starts_with("wasi:io/error@0.2.") {
            linker
                .instance(name)?
                .resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
        } else if name.starts_with("wasi:io/poll@0.2.") {
            add_poll(&mut linker.instance(name)?)?;
        } else if name.starts_with("wasi:io/streams@0.2.") {
            add_streams(&mut linker.instance(name)?)?;
        } else if name.starts_with("wasi:random/insecure-seed@0.2.") {
            linker
                .instance(name)?
                .func_wrap("insecure-seed", |_, (): ()| Ok(((seed(), seed()),)))?;
        }
    }
    linker.define_unknown_imports_as_traps(component)?;
    Ok(())
}

/// 64 bits from std's per-process random hasher keys, varied per call.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// `wasi:io/poll`, for the output streams only: their pollables are always
/// ready (a write never blocks), so `block` returns at once and `poll`
/// reports every pollable ready.
fn add_poll(poll: &mut LinkerInstance<'_, PluginState>) -> wasmtime::Result<()> {
    poll.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
    poll.func_wrap(
        "[method]pollable.ready",
        |_, (_,): (Resource<Pollable>,)| Ok((true,)),
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<Pollable>,)| Ok(()),
    )?;
    poll.func_wrap("poll", |_, (pollables,): (Vec<Resource<Pollable>>,)| {
        Ok(((0..pollables.len() as u32).collect::<Vec<u32>>(),))
    })?;
    Ok(())
}

/// The `output-stream` methods of `wasi:io/streams` that write or flush.
fn add_streams(streams: &mut LinkerInstance<'_, PluginState>) -> wasmtime::Result<()> {
    streams.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
    streams.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
    streams.func_wrap(
        "[method]output-stream.subscribe",
        |_, (this,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(this.rep()),)),
    )?;
    streams.resource(
        "output-stream",
        ResourceType::host::<OutputStream>(),
        |_, _| Ok(()),
    )?;
    streams.func_wrap(
        "[method]output-stream.check-write",
        |_, (_,): (Resource<OutputStream>,)| -> StreamResult<u64> { Ok((Ok(MAX_LINE as u64),)) },
    )?;
    for method in ["write", "blocking-write-and-flush"] {
        streams.func_wrap(
            &format!("[method]output-stream.{method}"),
            |mut store, (this, bytes): (Resource<OutputStream>, Vec<u8>)| -> StreamResult<()> {
                let state = store.data_mut();
                state.captured.write(&state.name, this.rep(), &bytes);
                Ok((Ok(()),))
            },
        )?;
    }
    for method in ["flush", "blocking-flush"] {
        streams.func_wrap(
            &format!("[method]output-stream.{method}"),
            |_, (_,): (Resource<OutputStream>,)| -> StreamResult<()> { Ok((Ok(()),)) },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_are_emitted_and_partial_ones_kept() {
        let mut captured = Captured::default();
        captured.write("p", STDOUT, b"one\ntw");
        assert_eq!(captured.stdout, b"tw");
        captured.write("p", STDOUT, b"o\r\n");
        assert!(captured.stdout.is_empty());
        captured.write("p", STDERR, b"err");
        assert_eq!(captured.stderr, b"err");
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let mut captured = Captured::default();
        captured.write("p", STDOUT, &vec![b'x'; MAX_LINE + 10]);
        assert_eq!(captured.stdout.len(), 10);
    }
}
