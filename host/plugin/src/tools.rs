//! What `switchyard plugin check | inspect | bench` do with one `.wasm` file,
//! without running a proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::testing::{TEST_LIMITS, endpoint};
use super::{
    LoadError, PluginHost, PluginKind, WasmFailover, WasmFilter, WasmHealthCheck, WasmResolver,
    WasmStrategy,
};
use switchyard_config::DEFAULT_MAX_CANDIDATES;
use switchyard_engines::balance::{Endpoint, Ranking, RequestContext, Strategy};
use switchyard_engines::failover::{AttemptFacts, FailoverPolicy};
use switchyard_engines::fusion::{Answer, Outcome, Source, UpstreamResponse};
use switchyard_engines::health::HealthCheck;
use switchyard_engines::health::active::ProbeAnswer;
use switchyard_engines::policy::AttemptOutcome;

/// What a component is.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `balancer`, `health-check`, `failover` or `resolver`; `None` when it
    /// exports none of the plugin interfaces this host supports.
    pub kind: Option<&'static str>,
    /// Its size, bytes.
    pub size_bytes: usize,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// Interfaces it exports, e.g. `switchyard:plugin/balancer@0.1.3`.
    pub exports: Vec<String>,
    /// Interfaces it imports (a plugin may import `host`, `types` and the
    /// WASI pieces Rust's standard library links).
    pub imports: Vec<String>,
}

/// Compiles `path` and describes it.
///
/// # Errors
/// [`LoadError`]: unreadable or not a component.
pub fn inspect(host: &PluginHost, path: &Path) -> Result<Inspection, LoadError> {
    let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let component = host.compile(path)?;
    let exports = host.exports_of(&component);
    let imports = component
        .component_type()
        .imports(host.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    let kind = super::kind_in(&exports).map(PluginKind::name);
    Ok(Inspection {
        kind,
        size_bytes: bytes.len(),
        sha256: super::sha256_hex(&bytes),
        exports,
        imports,
    })
}

/// A plugin loaded the way the host loads it, ready to be called with
/// synthetic inputs.
enum Loaded {
    Balancer(Box<WasmStrategy>, Vec<Arc<Endpoint>>),
    Health(WasmHealthCheck, Arc<Endpoint>),
    Failover(WasmFailover),
    Resolver(WasmResolver, Vec<Source>),
    Filter(WasmFilter),
}

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let track = if i % 4 == 0 { "canary" } else { "stable" };
            endpoint(
                i as u32,
                &format!("http://127.0.0.1:{}", 9000 + i),
                1 + (i % 3) as u32,
                &[("track", track)],
            )
        })
        .collect()
}

/// Loads `path` as its kind's world with `config_json`: what `check`
/// reports and `bench` calls.
fn load(host: &PluginHost, path: &Path, config_json: &str) -> Result<Loaded, LoadError> {
    let json = config_json.to_string();
    Ok(match host.kind_of(path)? {
        PluginKind::Balancer => {
            let pool = endpoints(8);
            Loaded::Balancer(
                Box::new(WasmStrategy::load(
                    host,
                    path,
                    json,
                    TEST_LIMITS,
                    &pool,
                    DEFAULT_MAX_CANDIDATES as usize,
                )?),
                pool,
            )
        }
        PluginKind::HealthCheck => Loaded::Health(
            WasmHealthCheck::load(host, path, json, TEST_LIMITS)?,
            endpoints(1).remove(0),
        ),
        PluginKind::Failover => {
            Loaded::Failover(WasmFailover::load(host, path, json, TEST_LIMITS)?)
        }
        PluginKind::Resolver => Loaded::Resolver(
            WasmResolver::load(host, path, json, TEST_LIMITS)?,
            (0..3)
                .map(|i| Source {
                    name: format!("source-{i}"),
                    priority: i,
                    weight: 1.0,
                })
                .collect(),
        ),
        PluginKind::Filter => Loaded::Filter(WasmFilter::load(host, path, json, TEST_LIMITS)?),
    })
}

/// Inspects `path` and loads it as the host would (compile, world and
/// version check, link, instantiate, `configure(config_json)`).
///
/// # Errors
/// [`LoadError`] with the reason it cannot be loaded.
pub fn check(host: &PluginHost, path: &Path, config_json: &str) -> Result<Inspection, LoadError> {
    let inspection = inspect(host, path)?;
    load(host, path, config_json)?;
    Ok(inspection)
}

/// Per-call latency of a plugin under synthetic inputs.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The plugin's kind.
    pub kind: &'static str,
    /// What one call was, e.g. `pick over 8 instances`.
    pub call: &'static str,
    /// Calls made (after a warm-up of a tenth as many).
    pub calls: usize,
    /// Calls the plugin faulted (the host would have used its fallback).
    pub faults: usize,
    /// Latency percentiles: p50, p90, p99, max.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest call.
    pub max: Duration,
}

/// Calls the plugin at `path` `iterations` times with synthetic inputs of
/// its kind — a pick over 8 instances, a probe and its evaluation, a
/// decision after a 503, a fusion of 3 JSON answers, a filter's look at a
/// GET — through the full sandbox, and reports per-call latency.
///
/// # Errors
/// [`LoadError`] when it cannot be loaded.
pub fn bench(
    host: &PluginHost,
    path: &Path,
    config_json: &str,
    iterations: usize,
) -> Result<BenchReport, LoadError> {
    let loaded = load(host, path, config_json)?;
    let client: SocketAddr = ([127, 0, 0, 1], 40_000).into();
    let headers = HeaderMap::new();
    let answers: Vec<Answer> = (0..3)
        .map(|i| Answer {
            source: i,
            latency_us: 1_000,
            outcome: Outcome::Response(UpstreamResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(format!(r#"{{"value": {}, "source": {i}}}"#, 40 + i)),
            }),
            rejected: None,
            json: None,
            key: None,
        })
        .collect();
    let mut ranking = Ranking::new();
    let request = |path| RequestContext {
        method: &Method::GET,
        authority: "example.com",
        path,
        headers: &headers,
        client_addr: client,
    };
    // One call; true when the plugin faulted.
    let mut call = || -> bool {
        match &loaded {
            Loaded::Balancer(strategy, pool) => {
                ranking.clear();
                strategy
                    .rank(&request("/cart"), pool, &mut ranking)
                    .is_err()
            }
            Loaded::Health(check, target) => {
                check.probe(target).is_err()
                    || check
                        .evaluate(
                            target,
                            &ProbeAnswer::Response {
                                status: 200,
                                headers: vec![("content-type".into(), "application/json".into())],
                                body: Bytes::from_static(br#"{"status": "ok", "load": 0.4}"#),
                                latency_us: 900,
                            },
                        )
                        .is_err()
            }
            Loaded::Failover(failover) => failover
                .on_failure(&AttemptFacts {
                    request: request("/cart"),
                    endpoint: 1,
                    failure: AttemptOutcome::Answered(503),
                    attempt: 1,
                    elapsed_ms: 12,
                    tried: &[1],
                    replayable: true,
                    idempotent: true,
                    retries_left: 2,
                    untried: 7,
                })
                .is_err(),
            Loaded::Resolver(resolver, sources) => resolver
                .resolve(&request("/quote"), sources, &answers, &(200..=299))
                .is_err(),
            Loaded::Filter(filter) => {
                // A small JSON body, for a filter that asked to see bodies.
                let body = |asked: usize| {
                    const BODY: &[u8] = br#"{"cart":[{"sku":"a-1","qty":2}]}"#;
                    (asked > 0)
                        .then(|| (BODY[..asked.min(BODY.len())].to_vec(), asked >= BODY.len()))
                };
                let view = filter.view(
                    &request("/api/cart"),
                    None,
                    0,
                    body(filter.request_body_bytes()),
                );
                filter.on_request(&view).is_err()
                    || (filter.on_responses()
                        && filter
                            .on_response(
                                &view,
                                StatusCode::OK,
                                &headers,
                                body(filter.response_body_bytes()),
                            )
                            .is_err())
            }
        }
    };
    for _ in 0..iterations.div_ceil(10) {
        call();
    }
    let mut times = Vec::with_capacity(iterations);
    let mut faults = 0;
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        faults += usize::from(call());
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    let (kind, what) = match &loaded {
        Loaded::Balancer(..) => (PluginKind::Balancer, "pick over 8 instances"),
        Loaded::Health(..) => (PluginKind::HealthCheck, "probe + evaluate of a JSON answer"),
        Loaded::Failover(..) => (PluginKind::Failover, "decision after a 503"),
        Loaded::Resolver(..) => (PluginKind::Resolver, "resolve 3 JSON answers"),
        Loaded::Filter(..) => (
            PluginKind::Filter,
            "on-request (and on-response when asked for) of a GET",
        ),
    };
    Ok(BenchReport {
        kind: kind.name(),
        call: what,
        calls: times.len(),
        faults,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// The source of a new plugin of `kind` (`sdk/templates/`).
fn template(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Balancer => include_str!("../../../sdk/templates/balancer.rs"),
        PluginKind::HealthCheck => include_str!("../../../sdk/templates/health-check.rs"),
        PluginKind::Failover => include_str!("../../../sdk/templates/failover.rs"),
        PluginKind::Resolver => include_str!("../../../sdk/templates/resolver.rs"),
        PluginKind::Filter => include_str!("../../../sdk/templates/filter.rs"),
    }
}

/// The WIT package this binary speaks: every file of `wit/`, by name.
pub const WIT_FILES: [(&str, &str); 10] = [
    ("README.md", include_str!("../../../wit/README.md")),
    ("balancer.wit", include_str!("../../../wit/balancer.wit")),
    ("failover.wit", include_str!("../../../wit/failover.wit")),
    ("filter.wit", include_str!("../../../wit/filter.wit")),
    ("health.wit", include_str!("../../../wit/health.wit")),
    ("kv.wit", include_str!("../../../wit/kv.wit")),
    ("needs.wit", include_str!("../../../wit/needs.wit")),
    ("resolver.wit", include_str!("../../../wit/resolver.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The Rust SDK's sources, by path in its crate.
const SDK_FILES: [(&str, &str); 8] = [
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    (
        "src/balancer.rs",
        include_str!("../../../sdk/src/balancer.rs"),
    ),
    (
        "src/failover.rs",
        include_str!("../../../sdk/src/failover.rs"),
    ),
    ("src/filter.rs", include_str!("../../../sdk/src/filter.rs")),
    ("src/health.rs", include_str!("../../../sdk/src/health.rs")),
    (
        "src/resolver.rs",
        include_str!("../../../sdk/src/resolver.rs"),
    ),
    ("src/slot.rs", include_str!("../../../sdk/src/slot.rs")),
    ("README.md", include_str!("../../../sdk/README.md")),
];

/// The `wit-bindgen` the SDK is built with (the workspace's pin; a unit
/// test keeps the two equal).
const WIT_BINDGEN: &str = "0.62.0";

/// The WIT package's name and version, from `types.wit`.
pub fn wit_package() -> &'static str {
    WIT_FILES[8]
        .1
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map_or("switchyard:plugin", |p| p.trim_end_matches(';'))
}

/// Writes the WIT package into `dir` (created); the files written.
///
/// # Errors
/// An I/O error, naming the file.
pub fn write_wit(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    write_files(
        dir,
        WIT_FILES
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string())),
    )
}

fn write_files(
    root: &Path,
    files: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<std::path::PathBuf>, String> {
    let mut written = Vec::new();
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A Rust crate on the SDK.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Self::Rust),
            "python" => Ok(Self::Python),
            "js" => Ok(Self::Js),
            other => Err(format!("`{other}`: rust, python or js")),
        }
    }
}

/// Creates `dir/NAME`, a plugin project of `kind` in `lang` that builds
/// with no checkout of Switchyard around: everything it needs is written
/// beside it from this binary.
///
/// - Rust: a `cdylib` crate (its own workspace, `.cargo/config.toml`
///   building for `wasm32-wasip2`, `src/lib.rs` a working plugin of the
///   kind) depending on `vendor/switchyard-sdk` by path — the SDK's source
///   and the WIT package as this binary carries them. A path, not a
///   registry version: the crate then builds offline and against exactly
///   the WIT this binary loads.
/// - Python (balancer, filter): the `py-weighted-rr` or `py-agent-guard`
///   example as a start, `requirements.txt` pinning componentize-py,
///   `build.sh`, `wit/`.
/// - JavaScript (balancer, filter): the `js-session-hash` or
///   `js-prompt-guard` example, `js-session-hash`'s `package.json` and lock
///   pinning componentize-js, `build.mjs`, `wit/`.
///
/// Each comes with a README giving the commands. Returns its directory.
///
/// # Errors
/// A reason: unknown kind, a kind the language has no template for, a
/// name that is not `[a-z0-9_-]+`, an existing directory, or an I/O error.
pub fn new_plugin(
    kind: &str,
    name: &str,
    lang: Lang,
    dir: &Path,
) -> Result<std::path::PathBuf, String> {
    let plugin_kind = PluginKind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .ok_or_else(|| {
            format!(
                "unknown kind `{kind}` (kinds: {})",
                PluginKind::ALL.map(PluginKind::name).join(", ")
            )
        })?;
    let templated = match lang {
        Lang::Rust => true,
        Lang::Python => matches!(plugin_kind, PluginKind::Balancer | PluginKind::Filter),
        Lang::Js => matches!(plugin_kind, PluginKind::Balancer | PluginKind::Filter),
    };
    if !templated {
        return Err(format!(
            "a {kind} plugin in {lang:?} has no template yet: start from a balancer, or write it in Rust"
        ));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`{name}`: use lower-case letters, digits, `-` and `_`"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("`{}` already exists", root.display()));
    }
    let file = name.replace('-', "_");
    let check = format!(
        "switchyard plugin check {file}.wasm      # what it is, and whether this Switchyard loads it\n\
         switchyard plugin bench {file}.wasm      # its pick cost"
    );
    let wit = |prefix: &'static str| {
        WIT_FILES
            .iter()
            .map(move |(p, t)| (format!("{prefix}{p}"), t.to_string()))
    };
    let files: Vec<(String, String)> = match lang {
        Lang::Rust => {
            let mut files = vec![
                (
                    "Cargo.toml".to_string(),
                    format!(
                        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                         [lib]\ncrate-type = [\"cdylib\"]\n\n\
                         [dependencies]\n\
                         # The SDK as this `switchyard` carries it (its WIT package included).\n\
                         switchyard-sdk = {{ path = \"vendor/switchyard-sdk\" }}\n\n\
                         # A crate of its own, even inside another workspace.\n[workspace]\n"
                    ),
                ),
                (
                    ".cargo/config.toml".to_string(),
                    "[build]\ntarget = \"wasm32-wasip2\"\n".to_string(),
                ),
                ("src/lib.rs".to_string(), template(plugin_kind).to_string()),
                (
                    "README.md".to_string(),
                    format!(
                        "# {name} — a Switchyard {kind} plugin\n\n\
                         ```sh\nrustup target add wasm32-wasip2\ncargo build --release\n\
                         cp target/wasm32-wasip2/release/{file}.wasm .\n{check}\n```\n\n\
                         `vendor/` holds the SDK and the WIT package ({}) of the `switchyard` that\n\
                         wrote this crate; `switchyard plugin new` again with a newer one to update.\n",
                        wit_package()
                    ),
                ),
                (
                    "vendor/switchyard-sdk/Cargo.toml".to_string(),
                    format!(
                        "[package]\nname = \"switchyard-sdk\"\nversion = \"{}\"\nedition = \"2024\"\n\
                         license = \"Apache-2.0\"\npublish = false\n\n\
                         [dependencies]\nwit-bindgen = \"{WIT_BINDGEN}\"\n",
                        env!("CARGO_PKG_VERSION")
                    ),
                ),
            ];
            files.extend(
                SDK_FILES
                    .iter()
                    .map(|(p, t)| (format!("vendor/switchyard-sdk/{p}"), t.to_string())),
            );
            files.extend(wit("vendor/switchyard-sdk/wit/"));
            files
        }
        Lang::Python => {
            let (world, (module, source), start) = if plugin_kind == PluginKind::Filter {
                (
                    "filter-plugin",
                    (
                        "guard.py",
                        [
                            include_str!("../../../plugins/py-agent-guard/app.py"),
                            include_str!("../../../plugins/py-agent-guard/guard.py"),
                        ],
                    ),
                    "a User-Agent guard (`app.py`, `guard.py`)",
                )
            } else {
                (
                    "balancer-plugin",
                    (
                        "weighted.py",
                        [
                            include_str!("../../../plugins/py-weighted-rr/app.py"),
                            include_str!("../../../plugins/py-weighted-rr/weighted.py"),
                        ],
                    ),
                    "nginx's smooth weighted round robin (`app.py`, `weighted.py`)",
                )
            };
            let mut files = vec![
                ("app.py".to_string(), source[0].to_string()),
                (module.to_string(), source[1].to_string()),
                (
                    "requirements.txt".to_string(),
                    include_str!("../../../plugins/py-weighted-rr/requirements.txt").to_string(),
                ),
                (
                    "build.sh".to_string(),
                    format!(
                        "#!/bin/sh\n# Builds {file}.wasm with componentize-py (pip install -r requirements.txt).\n\
                         set -e\ncd \"$(dirname \"$0\")\"\n\
                         componentize-py -d wit -w {world} componentize -p . app -o {file}.wasm\n"
                    ),
                ),
                (
                    "README.md".to_string(),
                    format!(
                        "# {name} — a Switchyard {kind} plugin in Python\n\n\
                         Starts as {start}.\n\n\
                         ```sh\npython3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n\
                         sh build.sh\n{check}\n```\n\n\
                         Grant it `capabilities = [\"random\"]`: CPython draws random bytes when it starts.\n\
                         `wit/` is the WIT package ({}) of the `switchyard` that wrote this project.\n",
                        wit_package()
                    ),
                ),
            ];
            files.extend(wit("wit/"));
            files
        }
        Lang::Js => {
            let rename = |text: &str| text.replace("js-session-hash", name);
            let (source, world, start) = if plugin_kind == PluginKind::Filter {
                (
                    include_str!("../../../plugins/js-prompt-guard/prompt-guard.js"),
                    " filter-plugin",
                    "a guard refusing request bodies that contain listed phrases",
                )
            } else {
                (
                    include_str!("../../../plugins/js-session-hash/session-hash.js"),
                    "",
                    "session affinity by rendezvous hashing",
                )
            };
            let mut files = vec![
                ("plugin.js".to_string(), source.to_string()),
                (
                    "build.mjs".to_string(),
                    include_str!("../../../plugins/js-session-hash/build.mjs")
                        .replace("../../wit", "./wit"),
                ),
                (
                    "package.json".to_string(),
                    rename(include_str!("../../../plugins/js-session-hash/package.json"))
                        .replace(
                            "session-hash.js js_session_hash.wasm",
                            &format!("plugin.js {file}.wasm{world}"),
                        )
                        // The example's tests are not part of the template.
                        .replace(
                            ",\n    \"test\": \"node --import ./test/host-stub.mjs --test test/*.test.js\"",
                            "",
                        ),
                ),
                (
                    "package-lock.json".to_string(),
                    rename(include_str!("../../../plugins/js-session-hash/package-lock.json")),
                ),
                (
                    "README.md".to_string(),
                    format!(
                        "# {name} — a Switchyard {kind} plugin in JavaScript\n\n\
                         Starts as {start} (`plugin.js`).\n\n\
                         ```sh\nnpm install\nnpm run build\n{check}\n```\n\n\
                         `wit/` is the WIT package ({}) of the `switchyard` that wrote this project.\n",
                        wit_package()
                    ),
                ),
            ];
            files.extend(wit("wit/"));
            files
        }
    };
    write_files(&root, files)?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files of `dir` (relative to the workspace) with `ext`, sorted.
    fn files(dir: &str, exts: &[&str]) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| exts.iter().any(|x| n.ends_with(x)))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_binary_carries_every_wit_and_sdk_file() {
        let mut wit: Vec<String> = WIT_FILES.iter().map(|(n, _)| n.to_string()).collect();
        wit.sort();
        assert_eq!(wit, files("wit", &[".wit", ".md"]));
        let mut sdk: Vec<String> = SDK_FILES
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("src/"))
            .map(str::to_owned)
            .collect();
        sdk.sort();
        assert_eq!(sdk, files("sdk/src", &[".rs"]));
        assert!(
            wit_package().starts_with("switchyard:plugin@"),
            "{}",
            wit_package()
        );
    }

    #[test]
    fn the_vendored_sdk_pins_the_workspaces_wit_bindgen() {
        let workspace =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
                .unwrap();
        assert!(
            workspace.contains(&format!("wit-bindgen = \"{WIT_BINDGEN}\"")),
            "the workspace's wit-bindgen is not {WIT_BINDGEN}"
        );
    }
}
