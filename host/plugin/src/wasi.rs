//! The WASI subset a plugin gets: its stdout and stderr, and a hash seed.
//!
//! - **Output**: a guest's standard library writes through `wasi:cli/stdout`,
//!   `wasi:cli/stderr` and `wasi:io/streams` (a panic message goes to
//!   stderr); the lines go to the log within the bounds of [`super::output`].
//! - **Hash seed**: `wasi:random/insecure-seed`, which Rust's `HashMap`
//!   needs for its keys, returns a seed the host draws per call. It is not a
//!   source of secrets and the plugin gets no other randomness.
//!
//! Every other WASI import is linked to a stub that traps when called, so a
//! plugin has no files, sockets or environment, and clocks and random bytes
//! only when its config grants them ([`Grants`]): a denied call's message
//! names the capability to grant. The environment and the preopened
//! directories answer empty (language runtimes read them at start).
//!
//! Why not `wasmtime-wasi`: its synchronous bindings block on a Tokio runtime
//! from inside the host call, which panics on a Tokio worker thread (where
//! every plugin call of the data path runs); its async bindings make every
//! plugin call async and slower. Two output streams need neither.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentType, Linker, LinkerInstance, Lower, Resource, ResourceType,
};

use super::Grants;
use super::bindings::PluginState;
use super::output::{MAX_LINE, Stream};

/// Marker type of the `output-stream` resource handed to guests.
pub struct OutputStream;

/// Marker type of the `wasi:io/poll.pollable` resource of an output stream.
pub struct Pollable;

/// Marker type of the `wasi:filesystem/types.descriptor` resource (never
/// created: a plugin has no preopened directories).
pub struct Descriptor;

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

/// Links the WASI subset for the versions `component` imports, then
/// every other import of it to a trapping stub.
///
/// # Errors
/// When wasmtime refuses a definition (a guest importing an incompatible shape
/// of these interfaces).
pub fn add_to_linker(
    linker: &mut Linker<PluginState>,
    component: &Component,
    grants: Grants,
) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    for (name, item) in component.component_type().imports(&engine) {
        if name.starts_with("switchyard:plugin/") {
            // The world's own interfaces, linked by the world's bindings; an
            // older compatible version resolves to them (semver), so no stub
            // may shadow it under the older name.
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            let message = format!("`{name}` is not available to plugins");
            linker.root().func_new(name, move |_, _, _, _| {
                Err(wasmtime::format_err!("{message}"))
            })?;
            continue;
        };
        let mut linker_instance = linker.instance(name)?;
        // The resources these interfaces share must be one type wherever an
        // interface `use`s them (a clock's `pollable` is `wasi:io/poll`'s),
        // so each is defined by name in every instance that exports it; any
        // other resource is a type of its own that no plugin can obtain.
        for (resource, item) in instance.exports(&engine) {
            if !matches!(item.ty, ComponentItem::Resource(_)) {
                continue;
            }
            let ty = match resource {
                "output-stream" => ResourceType::host::<OutputStream>(),
                "pollable" => ResourceType::host::<Pollable>(),
                "error" => ResourceType::host::<IoError>(),
                "descriptor" => ResourceType::host::<Descriptor>(),
                _ => ResourceType::host::<()>(),
            };
            linker_instance.resource(resource, ty, |_, _| Ok(()))?;
        }
        let interface = name.split('@').next().unwrap_or(name);
        let version_ok = name[interface.len()..].starts_with("@0.2.");
        let (defined, capability): (&[&str], _) = match interface {
            _ if !version_ok => (&[], None),
            "wasi:cli/stdout" | "wasi:cli/stderr" => {
                let (function, rep) = if interface.ends_with("stdout") {
                    ("get-stdout", STDOUT)
                } else {
                    ("get-stderr", STDERR)
                };
                linker_instance.func_wrap(function, move |_, (): ()| {
                    Ok((Resource::<OutputStream>::new_own(rep),))
                })?;
                (&["get-stdout", "get-stderr"], None)
            }
            "wasi:io/poll" => (add_poll(&mut linker_instance)?, None),
            "wasi:io/streams" => (add_streams(&mut linker_instance)?, None),
            "wasi:cli/environment" => (add_empty_environment(&mut linker_instance)?, None),
            "wasi:filesystem/preopens" => {
                linker_instance.func_wrap("get-directories", |_, (): ()| {
                    Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
                })?;
                (&["get-directories"], None)
            }
            "wasi:random/insecure-seed" => {
                linker_instance.func_wrap("insecure-seed", |_, (): ()| Ok(((seed(), seed()),)))?;
                (&["insecure-seed"], None)
            }
            "wasi:clocks/monotonic-clock" | "wasi:clocks/wall-clock" if grants.clock => {
                (add_granted(&mut linker_instance, interface)?, Some("clock"))
            }
            "wasi:random/random" | "wasi:random/insecure" if grants.random => (
                add_granted(&mut linker_instance, interface)?,
                Some("random"),
            ),
            _ if interface.starts_with("wasi:clocks/") => (&[], Some("clock")),
            _ if interface.starts_with("wasi:random/") => (&[], Some("random")),
            _ => (&[], None),
        };
        deny_rest(
            &mut linker_instance,
            name,
            &instance,
            &engine,
            capability,
            defined,
        )?;
    }
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

/// The functions a granted capability gives (see
/// [`Capability`](switchyard_config::Capability)); returns their names.
fn add_granted(
    instance: &mut LinkerInstance<'_, PluginState>,
    interface: &str,
) -> wasmtime::Result<&'static [&'static str]> {
    Ok(match interface {
        "wasi:clocks/monotonic-clock" => {
            instance.func_wrap("now", |_, (): ()| Ok((monotonic_ns(),)))?;
            instance.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
            &["now", "resolution"]
        }
        "wasi:clocks/wall-clock" => {
            instance.func_wrap("now", |_, (): ()| {
                let since_epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Ok((Datetime {
                    seconds: since_epoch.as_secs(),
                    nanoseconds: since_epoch.subsec_nanos(),
                },))
            })?;
            instance.func_wrap("resolution", |_, (): ()| {
                Ok((Datetime {
                    seconds: 0,
                    nanoseconds: 1,
                },))
            })?;
            &["now", "resolution"]
        }
        "wasi:random/random" | "wasi:random/insecure" => {
            let names: &'static [&'static str] = if interface.ends_with("insecure") {
                &["get-insecure-random-bytes", "get-insecure-random-u64"]
            } else {
                &["get-random-bytes", "get-random-u64"]
            };
            instance.func_wrap(names[0], |_, (len,): (u64,)| {
                if len > MAX_RANDOM_BYTES {
                    wasmtime::bail!(
                        "asked for {len} random bytes; at most {MAX_RANDOM_BYTES} per call"
                    )
                }
                let mut bytes = vec![0u8; len as usize];
                getrandom::fill(&mut bytes)
                    .map_err(|e| wasmtime::format_err!("no random bytes from the OS: {e}"))?;
                Ok((bytes,))
            })?;
            instance.func_wrap(names[1], |_, (): ()| {
                getrandom::u64()
                    .map(|n| (n,))
                    .map_err(|e| wasmtime::format_err!("no random bytes from the OS: {e}"))
            })?;
            names
        }
        _ => &[],
    })
}

/// Links every function of `name` but those `defined` to a trap that says
/// it is not available, naming the `capability` that would grant it.
fn deny_rest(
    linker_instance: &mut LinkerInstance<'_, PluginState>,
    name: &str,
    instance: &wasmtime::component::types::ComponentInstance,
    engine: &wasmtime::Engine,
    capability: Option<&'static str>,
    defined: &[&str],
) -> wasmtime::Result<()> {
    for (function, item) in instance.exports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentFunc(_)) || defined.contains(&function) {
            continue;
        }
        let what = format!("{name}#{function}");
        let message = match capability {
            _ if function.starts_with("subscribe") => {
                format!("`{what}` is not available to plugins (a plugin decides, it never waits)")
            }
            Some(capability) => not_granted(&what, capability),
            None => format!("`{what}` is not available to plugins"),
        };
        linker_instance.func_new(function, move |_, _, _, _| {
            Err(wasmtime::format_err!("{message}"))
        })?;
    }
    Ok(())
}

/// The message of a trap on `what` (an interface or function) called by a
/// plugin not granted `capability`.
pub fn not_granted(what: &str, capability: &str) -> String {
    format!(
        "`{what}` is not available to plugins without the `{capability}` capability \
         (grant it with `capabilities = [\"{capability}\"]`)"
    )
}

/// Nanoseconds since the first call in this process (a monotonic clock's
/// start is arbitrary).
fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Largest `get-random-bytes` answer, bytes (64 KiB).
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// `wasi:cli/environment` of a plugin: no variables, no arguments, no
/// working directory. Language runtimes (CPython, StarlingMonkey) read them
/// at start; an empty answer gives nothing away.
fn add_empty_environment(
    env: &mut LinkerInstance<'_, PluginState>,
) -> wasmtime::Result<&'static [&'static str]> {
    env.func_wrap("get-environment", |_, (): ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
    env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
    Ok(&["get-environment", "get-arguments", "initial-cwd"])
}

/// `wasi:io/poll`, for the output streams only: their pollables are always
/// ready (a write never blocks), so `block` returns at once and `poll`
/// reports every pollable ready.
fn add_poll(
    poll: &mut LinkerInstance<'_, PluginState>,
) -> wasmtime::Result<&'static [&'static str]> {
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
    Ok(&["[method]pollable.ready", "[method]pollable.block", "poll"])
}

/// The `output-stream` methods of `wasi:io/streams` that write or flush.
fn add_streams(
    streams: &mut LinkerInstance<'_, PluginState>,
) -> wasmtime::Result<&'static [&'static str]> {
    streams.func_wrap(
        "[method]output-stream.subscribe",
        |_, (this,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(this.rep()),)),
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
                let stream = if this.rep() == STDERR {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                state
                    .captured
                    .write(&state.name, state.stats.output(), stream, &bytes)?;
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
    Ok(&[
        "[method]output-stream.subscribe",
        "[method]output-stream.check-write",
        "[method]output-stream.write",
        "[method]output-stream.blocking-write-and-flush",
        "[method]output-stream.flush",
        "[method]output-stream.blocking-flush",
    ])
}
