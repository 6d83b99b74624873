//! Wasm balancer plugins: the example's split, and hostile plugins that must
//! never cost a request.

use switchyard_tests::fixtures;

use crate::{client, get, instances, serve, single_pool, upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_gives_its_documented_split() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ label = "track", canary = "canary", percent = 20 }}, call_deadline_ms = 1000 }} }}"#,
        fixtures::CANARY_SPLIT
    );
    let labelled = format!(
        r#"[{{ url = "{}", labels = {{ track = "stable" }} }}, {{ url = "{}", labels = {{ track = "stable" }} }}, {{ url = "{}", labels = {{ track = "canary" }} }}]"#,
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let proxy = serve(&dir, &single_pool(&strategy, &labelled));
    let client = client();
    for _ in 0..200 {
        let (status, _) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200);
    }
    // Documented: exactly `percent`% over every 100 requests an instance
    // decides (one per worker: two here), round robin within the stable
    // group. Tolerance: 2 percentage points (4 requests).
    let hits: Vec<u64> = ups.iter().map(|u| u.hits()).collect();
    assert!((36..=44).contains(&hits[2]), "canary got {hits:?}");
    assert!((76..=84).contains(&hits[0]), "stable u0 got {hits:?}");
    assert!((76..=84).contains(&hits[1]), "stable u1 got {hits:?}");
    assert!(
        !proxy.log().iter().any(|l| l.contains("plugin fault")),
        "a well-behaved plugin faulted: {:?}",
        proxy.log()
    );
}

/// A config in the plugin spellings of earlier versions (a balancer's keys
/// flat beside `kind`, its fallback by name, `failover_plugin`) loads and
/// serves through the plugins, and every way the config is read says the
/// new spelling: `check`, the log at start, `/v1/status`; the admin API
/// gives the pool back in the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_plugin_spellings_load_and_say_the_new_one() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\n\
         strategy = {{ kind = \"plugin\", path = \"{canary}\", config = {{ label = \"track\", canary = \"canary\", percent = 100 }}, fallback = \"random\", call_deadline_ms = 1000 }}\n\
         failover_plugin = {{ path = \"{retry}\", call_deadline_ms = 1000 }}\n\
         instances = [{{ url = \"{}\", labels = {{ track = \"stable\" }} }}, {{ url = \"{}\", labels = {{ track = \"canary\" }} }}]\n",
        ups[0].url(),
        ups[1].url(),
        canary = fixtures::CANARY_SPLIT,
        retry = fixtures::RETRY_SCHEDULE,
    );
    let path = switchyard_tests::process::write_config(dir.path(), &toml);
    let check = std::process::Command::new(crate::BINARY)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    for (key, new) in [
        (
            "pools.p.strategy",
            "`strategy = { kind = \"plugin\", plugin = {",
        ),
        (
            "pools.p.failover",
            "`failover = { kind = \"plugin\", plugin = {",
        ),
    ] {
        assert!(
            stderr.contains(&format!(
                "warning: {key}: a deprecated spelling, still read; write {new}"
            )),
            "{stderr}"
        );
    }

    let proxy = serve(&dir, &toml);
    let warning = proxy.wait_for_log("pools.p.failover: a deprecated spelling");
    assert!(warning.contains("WARN"), "{warning}");
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    }
    // The plugin ranks (all to the canary), not its fallback.
    assert_eq!((ups[0].hits(), ups[1].hits()), (0, 10));
    let api = proxy.admin_url();
    let (_, status) = crate::admin(reqwest::Method::GET, &format!("{api}/v1/status"), None).await;
    let warnings = status["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{status}");
    let (_, pool) = crate::admin(reqwest::Method::GET, &format!("{api}/v1/pools/p"), None).await;
    assert_eq!(
        pool["strategy"]["plugin"]["path"],
        fixtures::CANARY_SPLIT,
        "{pool}"
    );
    assert_eq!(pool["strategy"]["fallback"]["kind"], "random", "{pool}");
    assert_eq!(pool["failover"]["kind"], "plugin", "{pool}");
    assert_eq!(
        pool["failover"]["plugin"]["path"],
        fixtures::RETRY_SCHEDULE,
        "{pool}"
    );
}

/// A pool larger than `max_candidates` gives each pick a fresh sample of
/// that many: the plugin (which takes its first candidate) never sees more,
/// and over many requests every instance is in some sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_pool_gives_the_plugin_a_fresh_bounded_sample() {
    let ups = upstreams(12);
    let dir = tempfile::tempdir().unwrap();
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ mode = "print" }}, call_deadline_ms = 1000 }}, max_candidates = 4 }}"#,
        fixtures::HOSTILE_BALANCER
    );
    let proxy = serve(&dir, &single_pool(&strategy, &instances(&ups)));
    let client = client();
    // Each instance is first in a sample with probability 1/12: missing
    // one over 300 picks has odds below 1e-10.
    for _ in 0..300 {
        let (status, _) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200);
    }
    let hits: Vec<u64> = ups.iter().map(|u| u.hits()).collect();
    assert!(
        hits.iter().all(|h| *h > 0),
        "an instance was never sampled: {hits:?}"
    );
    proxy.wait_for_log("hello on stdout (4 candidates)");
    let counts: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| l.contains("hello on stdout"))
        .filter(|l| !l.contains("(4 candidates)"))
        .collect();
    assert!(counts.is_empty(), "a pick saw another count: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_never_cost_a_request() {
    const MODES: [&str; 5] = ["loop", "alloc", "trap", "unknown-id", "empty"];
    const REQUESTS: usize = 4;
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::from("[[listeners]]\nlisten = \"127.0.0.1:0\"\n");
    for mode in MODES {
        // One copy per mode, so each plugin's log lines carry its own name.
        let path = dir.path().join(format!("{mode}.wasm"));
        std::fs::copy(fixtures::HOSTILE_BALANCER, &path).unwrap();
        toml.push_str(&format!(
            r#"
[[routes]]
match = {{ path_prefix = "/{mode}" }}
pool = "{mode}"
[pools.{mode}]
strategy = {{ kind = "plugin", plugin = {{ path = "{mode}.wasm", config = {{ mode = "{mode}" }}, call_deadline_ms = 5, memory_limit_mib = 16 }} }}
instances = [{{ url = "{}" }}, {{ url = "{}" }}]
"#,
            ups[0].url(),
            ups[1].url()
        ));
    }
    let proxy = serve(&dir, &toml);
    let client = client();
    for mode in MODES {
        for _ in 0..REQUESTS {
            let (status, body) = get(&client, &format!("{}/{mode}", proxy.url)).await;
            assert_eq!(status, 200, "mode {mode}: {body}");
            assert!(body == "u0" || body == "u1", "mode {mode}: {body}");
        }
        // Every pick faulted and was counted: the counter reached REQUESTS.
        let line = proxy.wait_for(
            |l| {
                l.contains("plugin fault")
                    && l.contains(&format!("plugin=\"{mode}.wasm\""))
                    && l.contains(&format!("faults={REQUESTS}"))
            },
            &format!("fault {REQUESTS} of {mode}.wasm"),
        );
        let expected_reason = match mode {
            "loop" => "call deadline",
            "alloc" => "memory limit",
            "trap" => "trapped",
            _ => "nonsense",
        };
        assert!(line.contains(expected_reason), "{mode}: {line}");
    }
    // The fallback (round robin) served every request; the host is still up.
    assert_eq!(
        ups[0].hits() + ups[1].hits(),
        (MODES.len() * REQUESTS) as u64
    );
    let (status, _) = get(&client, &format!("{}/trap", proxy.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_output_goes_to_the_log_with_its_name() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(
            &format!(
                r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ mode = "print" }}, call_deadline_ms = 1000 }} }}"#,
                fixtures::HOSTILE_BALANCER
            ),
            &instances(&ups),
        ),
    );
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    for stream in ["stdout", "stderr"] {
        let line = proxy.wait_for_log(&format!("hello on {stream}"));
        assert!(line.contains("plugin=\"hostile_balancer.wasm\""), "{line}");
        assert!(line.contains(&format!("stream=\"{stream}\"")), "{line}");
    }
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[test]
fn every_plugin_kind_compiles_through_the_sdk() {
    const NEEDS: &str = "switchyard:plugin/request-needs@0.1.3";
    let host = switchyard::plugin::PluginHost::new().unwrap();
    // Each kind's exports, sorted.
    for (path, interfaces) in [
        (
            fixtures::CANARY_SPLIT,
            &["switchyard:plugin/balancer@0.1.3"][..],
        ),
        (
            fixtures::JSON_HEALTH,
            &["switchyard:plugin/health-check@0.1.3"],
        ),
        (
            fixtures::FAILOVER_STATIC,
            &["switchyard:plugin/failover@0.1.3", NEEDS],
        ),
        (
            fixtures::RESOLVER_FIRST,
            &[NEEDS, "switchyard:plugin/resolver@0.1.3"],
        ),
    ] {
        let mut exports = host.exports(std::path::Path::new(path)).unwrap();
        exports.sort();
        assert_eq!(exports, interfaces, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_affinity_routes_by_header_and_falls_back() {
    let mut ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let labelled = format!(
        r#"[{{ url = "{}", labels = {{ region = "eu" }} }}, {{ url = "{}", labels = {{ region = "us" }} }}, {{ url = "{}", labels = {{ region = "eu" }} }}]"#,
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ header = "x-region", label = "region" }}, call_deadline_ms = 1000 }} }}"#,
        fixtures::LABEL_AFFINITY
    );
    // One worker: the plugin's round-robin cursor is per worker thread, and
    // the exact shares below assume one cursor.
    let proxy = serve(
        &dir,
        &(single_pool(&strategy, &labelled) + "[runtime]\nworker_threads = 1\n"),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    let region = |r: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.get(&url).header("x-region", r).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    for _ in 0..6 {
        assert_eq!(region("us").await, "u1");
        assert!(["u0", "u2"].contains(&region("eu").await.as_str()));
    }
    assert_eq!(ups[0].hits(), 3);
    assert_eq!(ups[2].hits(), 3);
    // Without the header, every instance serves.
    for _ in 0..6 {
        assert_eq!(get(&client, &url).await.0, 200);
    }
    assert!(ups.iter().all(|u| u.hits() > 3));
    // The only "us" instance dies: "us" requests fall back to the rest.
    ups[1].kill();
    for _ in 0..4 {
        assert!(["u0", "u2"].contains(&region("us").await.as_str()));
    }
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_p2c_avoids_a_slow_instance() {
    let ups = upstreams(3);
    ups[2].set_delay(std::time::Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", call_deadline_ms = 1000 }} }}"#,
        fixtures::LATENCY_P2C
    );
    let proxy = serve(&dir, &single_pool(&strategy, &instances(&ups)));
    let client = client();
    for _ in 0..60 {
        assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    }
    // Round robin would send it 20; once its latency is known it only wins a
    // sample against another instance that is slower still, which never happens.
    assert!(ups[2].hits() <= 6, "slow instance got {}", ups[2].hits());
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_faulting_is_quarantined_then_retried() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures::HOSTILE_BALANCER, dir.path().join("trap.wasm")).unwrap();
    let proxy = serve(
        &dir,
        &single_pool(
            r#"{ kind = "plugin", plugin = { path = "trap.wasm", config = { mode = "trap" }, quarantine = { faults = 3, window_ms = 60000, backoff_ms = 300, max_backoff_ms = 60000 } } }"#,
            &instances(&ups),
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    // Every request is served (the fallback decides); after 3 faults the
    // plugin is set aside; after the backoff it is tried again, faults at
    // once and is set aside for twice as long.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, _) = get(&client, &url).await;
        assert_eq!(status, 200);
        if proxy
            .log()
            .iter()
            .any(|l| l.contains("plugin quarantined") && l.contains("backoff_ms=600"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never quarantined twice:\n{}",
            proxy.log().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let first = proxy.wait_for_log("plugin quarantined");
    assert!(
        first.contains("faults=3") && first.contains("backoff_ms=300"),
        "{first}"
    );
    // While quarantined the plugin is not called: 3 faults to quarantine it,
    // 1 on the probe — and no request since.
    let faults = || {
        proxy
            .log()
            .iter()
            .filter(|l| l.contains("plugin fault;"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while faults() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            proxy.log().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(faults(), 4, "{}", proxy.log().join("\n"));
}

/// Runs `switchyard ARGS`; (success, stdout + stderr).
fn switchyard_cli(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(crate::BINARY)
        .args(args)
        .output()
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn plugin_check_inspect_and_bench_say_what_a_file_is() {
    use sha2::Digest;
    let (ok, text) = switchyard_cli(&["plugin", "check", fixtures::CANARY_SPLIT]);
    assert!(ok, "{text}");
    assert!(
        text.contains("kind:     balancer") && text.contains("loads:    yes"),
        "{text}"
    );
    assert!(text.contains("switchyard:plugin/balancer@0.1.3"), "{text}");

    let (ok, text) = switchyard_cli(&["plugin", "inspect", fixtures::RESOLVER_FIRST]);
    assert!(ok, "{text}");
    let sha = sha2::Sha256::digest(std::fs::read(fixtures::RESOLVER_FIRST).unwrap());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        text.contains(&hex) && text.contains("kind:     resolver"),
        "{text}"
    );

    // Refusals exit non-zero with the reason.
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    // Over the size limit: refused before it is read (a sparse file).
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    for (file, config, reason) in [
        (text_file.to_str().unwrap(), "{}", "no `\\0asm` magic bytes"),
        (core.to_str().unwrap(), "{}", "core WebAssembly module"),
        (
            huge.to_str().unwrap(),
            "{}",
            "over the 64 MiB a plugin may have",
        ),
        (
            fixtures::RETRY_SCHEDULE,
            r#"{"bogus": 1}"#,
            "unknown field `bogus`",
        ),
    ] {
        let (ok, text) = switchyard_cli(&["plugin", "check", file, "--config", config]);
        assert!(!ok && text.contains(reason), "{file}: {text}");
    }

    let (ok, text) = switchyard_cli(&[
        "plugin",
        "bench",
        fixtures::LATENCY_P2C,
        "--iterations",
        "200",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("balancer plugin") && text.contains("200 calls (0 faulted): p50"),
        "{text}"
    );
    let (ok, text) = switchyard_cli(&[
        "plugin",
        "bench",
        fixtures::HOSTILE_FAILOVER,
        "--iterations",
        "20",
    ]);
    assert!(ok && text.contains("20 calls (20 faulted)"), "{text}");
}

/// Runs `command` in `dir` as a plugin author elsewhere would: `HOME` is a
/// directory of its own (the toolchains' homes are passed on, so that rustup,
/// cargo and npm find what is installed and cached); fails with its output.
fn run_as_author(
    command: &mut std::process::Command,
    dir: &std::path::Path,
    home: &std::path::Path,
) {
    let real_home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let keep = |var: &str, default: &str| {
        std::env::var_os(var).unwrap_or_else(|| real_home.join(default).into_os_string())
    };
    let output = command
        .current_dir(dir)
        .env("HOME", home)
        .env("CARGO_HOME", keep("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", keep("RUSTUP_HOME", ".rustup"))
        .env("npm_config_cache", keep("npm_config_cache", ".npm"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run the build");
    assert!(
        output.status.success(),
        "{command:?} in {}: {}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn plugin_new_projects_build_outside_the_repository() {
    // Outside the workspace (the system temp dir), with a HOME of its own.
    let dir = tempfile::tempdir().unwrap();
    let (projects, home) = (dir.path().join("projects"), dir.path().join("home"));
    std::fs::create_dir_all(&projects).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let at = projects.to_str().unwrap();
    let new = |kind: &str, name: &str, lang: &str| {
        switchyard_cli(&["plugin", "new", kind, name, "--lang", lang, "--dir", at])
    };
    for kind in ["balancer", "health-check", "failover", "resolver", "filter"] {
        let (ok, text) = new(kind, &format!("my-{kind}"), "rust");
        assert!(ok, "{text}");
    }
    let (ok, text) = new("router", "x", "rust");
    assert!(!ok && text.contains("unknown kind `router`"), "{text}");
    let (ok, text) = new("failover", "x", "python");
    assert!(!ok && text.contains("no template"), "{text}");
    // Nothing points back into the checkout.
    let manifest = std::fs::read_to_string(projects.join("my-balancer/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("path = \"vendor/switchyard-sdk\""),
        "{manifest}"
    );
    assert!(!manifest.contains(env!("CARGO_MANIFEST_DIR")), "{manifest}");
    // Each Rust crate builds on its vendored SDK (a target dir of this
    // test's own, kept between runs under target/ for speed: the
    // checkout's SDK is never in its dependency graph).
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new");
    for kind in ["balancer", "health-check", "failover", "resolver", "filter"] {
        let root = projects.join(format!("my-{kind}"));
        run_as_author(
            std::process::Command::new(env!("CARGO"))
                .args(["build", "--release", "--offline", "--quiet"])
                .env("CARGO_TARGET_DIR", &target),
            &root,
            &home,
        );
        let wasm = target.join(format!(
            "wasm32-wasip2/release/my_{}.wasm",
            kind.replace('-', "_")
        ));
        let (ok, text) = switchyard_cli(&["plugin", "check", wasm.to_str().unwrap()]);
        assert!(ok && text.contains(&format!("kind:     {kind}")), "{text}");
    }
    // A balancer and a filter in Python, built with their own pinned
    // componentize-py.
    let componentize = switchyard_tests::polyglot::componentize_py();
    let path = format!(
        "{}:{}",
        componentize.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for kind in ["balancer", "filter"] {
        let name = format!("py-{kind}");
        let (ok, text) = new(kind, &name, "python");
        assert!(ok, "{text}");
        run_as_author(
            std::process::Command::new("sh")
                .arg("build.sh")
                .env("PATH", &path),
            &projects.join(&name),
            &home,
        );
        let wasm = projects.join(format!("{name}/py_{kind}.wasm"));
        let (ok, text) = switchyard_cli(&["plugin", "check", wasm.to_str().unwrap()]);
        assert!(ok && text.contains(&format!("kind:     {kind}")), "{text}");
    }
    // And in JavaScript, with its package.json and lock.
    for kind in ["balancer", "filter"] {
        let name = format!("js-{kind}");
        let (ok, text) = new(kind, &name, "js");
        assert!(ok, "{text}");
        let js = projects.join(&name);
        run_as_author(
            std::process::Command::new("npm").args(["install", "--no-audit", "--no-fund"]),
            &js,
            &home,
        );
        run_as_author(
            std::process::Command::new("npm").args(["run", "build"]),
            &js,
            &home,
        );
        let wasm = js.join(format!("js_{kind}.wasm"));
        let (ok, text) = switchyard_cli(&["plugin", "check", wasm.to_str().unwrap()]);
        assert!(ok && text.contains(&format!("kind:     {kind}")), "{text}");
    }
    // The WIT package for any bindings generator, and the version it is.
    let wit = dir.path().join("wit");
    let (ok, text) = switchyard_cli(&["plugin", "wit", "--out", wit.to_str().unwrap()]);
    assert!(
        ok && text.contains(switchyard::plugin::tools::wit_package()),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(wit.join("worlds.wit"))
            .unwrap()
            .contains("world balancer-plugin")
    );
    let (ok, text) = switchyard_cli(&["--version"]);
    assert!(
        ok && text.contains(switchyard::plugin::tools::wit_package()),
        "{text}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, text) = switchyard_cli(&["completions", shell]);
        assert!(
            ok && text.contains("switchyard") && text.contains("serve"),
            "{shell}: {text}"
        );
    }
    let (ok, text) = switchyard_cli(&["man"]);
    assert!(ok && text.contains(".TH switchyard"), "{text}");
    assert!(text.contains("serve") && text.contains("plugin"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_replaced_in_the_plugins_dir_is_reloaded_live_and_a_broken_one_refused() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let install = |source: &[u8]| {
        let temp = plugins.join(".incoming");
        std::fs::write(&temp, source).unwrap();
        std::fs::rename(&temp, plugins.join("lb.wasm")).unwrap();
    };
    install(&std::fs::read(fixtures::LATENCY_P2C).unwrap());
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"plugins\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\n\
         strategy = {{ kind = \"plugin\", plugin = {{ path = \"plugins/lb.wasm\", call_deadline_ms = 1000 }} }}\n\
         instances = [{{ url = \"{}\", labels = {{ region = \"a\" }} }}, {{ url = \"{}\", labels = {{ region = \"b\" }} }}]\n",
        ups[0].url(),
        ups[1].url()
    );
    let proxy = serve(&dir, &toml);
    proxy.wait_for_log("watching the plugins directory");
    let client = client();
    let url = format!("{}/", proxy.url);
    let region_b = || async {
        let response = client
            .get(&url)
            .header("x-region", "b")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    for _ in 0..4 {
        assert_eq!(region_b().await.0, 200);
    }
    // Replaced by label-affinity: requests for region b now all go to u1.
    install(&std::fs::read(fixtures::LABEL_AFFINITY).unwrap());
    proxy.wait_for_log("plugin reloaded");
    for _ in 0..6 {
        assert_eq!(region_b().await, (200, "u1".to_string()));
    }
    // A broken replacement is refused with the reason, once; the loaded
    // label-affinity keeps serving.
    install(b"\0asm\x01\0\0\0");
    let refused = proxy.wait_for_log("plugin replacement refused");
    assert!(refused.contains("core WebAssembly module"), "{refused}");
    for _ in 0..6 {
        assert_eq!(region_b().await, (200, "u1".to_string()));
    }
    // Reading the file makes access events; a refused file must not be
    // retried for them. Absence needs a wait: the debouncer reports within
    // 250 ms, so a retry would show well within this one.
    for _ in 0..3 {
        let _ = std::fs::read(plugins.join("lb.wasm")).unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let refusals = proxy
        .log()
        .iter()
        .filter(|l| l.contains("plugin replacement refused"))
        .count();
    assert_eq!(
        refusals, 1,
        "a refused file is not retried until it changes"
    );
}

/// A `switchyard` whose admin API watches `plugins_dir = "plugins"` (made
/// empty in a new temp dir), with one pool over `ups`; its temp dir, the
/// plugins directory and the process, once it watches.
fn watching_a_plugins_dir(
    ups: &[switchyard_tests::upstream::Upstream],
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    switchyard_tests::process::Switchyard,
) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"plugins\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\ninstances = {}\n",
        instances(ups)
    );
    let proxy = serve(&dir, &toml);
    proxy.wait_for_log("watching the plugins directory");
    (dir, plugins, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_200_plugins_and_junk_is_handled_file_by_file() {
    let ups = upstreams(1);
    let (_dir, plugins, proxy) = watching_a_plugins_dir(&ups);
    // 200 plugins dropped in at once, plus a truncated one and a text file.
    let component = std::fs::read(fixtures::CANARY_SPLIT).unwrap();
    for i in 0..200 {
        let temp = plugins.join(format!(".p{i}"));
        std::fs::write(&temp, &component).unwrap();
        std::fs::rename(&temp, plugins.join(format!("p{i}.wasm"))).unwrap();
    }
    std::fs::write(
        plugins.join("truncated.wasm"),
        &component[..component.len() / 2],
    )
    .unwrap();
    std::fs::write(plugins.join("notes.wasm"), "hello").unwrap();
    let available = || {
        proxy
            .log()
            .iter()
            .filter(|l| l.contains("plugin available"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while available() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 200 announced",
            available()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for name in ["truncated.wasm", "notes.wasm"] {
        let line = proxy.wait_for(
            |l| l.contains("not loadable; ignored") && l.contains(name),
            name,
        );
        assert!(line.contains("not a WebAssembly component"), "{line}");
    }
    // The proxy served on throughout and still does.
    assert_eq!(get(&client(), &format!("{}/", proxy.url)).await.0, 200);
}

#[test]
fn a_restart_loads_plugins_from_the_compile_cache() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[plugin_cache]\ndir = \"cache\"\n{}",
        single_pool(
            &format!(
                r#"{{ kind = "plugin", plugin = {{ path = "{}", call_deadline_ms = 1000 }} }}"#,
                fixtures::CANARY_SPLIT
            ),
            &instances(&ups),
        )
    );
    let config = switchyard_tests::process::write_config(dir.path(), &toml);
    let check = || {
        let output = std::process::Command::new(crate::BINARY)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let first = check();
    assert!(first.contains("plugin compiled"), "{first}");
    let cache = dir.path().join("cache");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache dir mode {mode:o}");
    let second = check();
    assert!(
        second.contains("plugin loaded from the compile cache")
            && !second.contains("plugin compiled"),
        "{second}"
    );
    // Disabled: compiled again, nothing read from the cache.
    std::fs::write(&config, toml.replace("dir = \"cache\"", "enabled = false")).unwrap();
    let disabled = check();
    assert!(disabled.contains("plugin compiled"), "{disabled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_store_outlives_a_trapped_instance_and_needs_its_grant() {
    let ups = upstreams(1);
    let strategy = |grant: &str| {
        format!(
            r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ mode = "count" }}, call_deadline_ms = 1000{grant} }} }}"#,
            fixtures::HOSTILE_BALANCER
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(&strategy(r#", capabilities = ["kv"]"#), &instances(&ups)),
    );
    let client = client();
    for _ in 0..7 {
        assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    }
    // Picks 3 and 6 trapped (their requests served by the fallback) and the
    // instance was rebuilt each time; the count went on from the store.
    proxy.wait_for_log("kv picks 7");
    let counted: Vec<String> = proxy
        .log()
        .iter()
        .filter_map(|l| l.split("kv picks ").nth(1))
        .map(|n| n.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(counted, ["1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(ups[0].hits(), 7);

    // Without the grant every pick faults, naming the capability.
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &single_pool(&strategy(""), &instances(&ups)));
    assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    let fault = proxy.wait_for_log("plugin fault");
    assert!(
        fault.contains(r#"capabilities = [\"kv\"]"#) || fault.contains(r#"capabilities = ["kv"]"#),
        "{fault}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_the_previous_wit_version_still_loads() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    // Built from a frozen copy of `switchyard:plugin@0.1.0`; the host is 0.1.3.
    let (ok, report) = switchyard_cli(&["plugin", "check", fixtures::LEGACY_BALANCER]);
    assert!(ok, "{report}");
    assert!(
        report.contains("switchyard:plugin/balancer@0.1.0"),
        "{report}"
    );
    assert!(report.contains("kind:     balancer"), "{report}");
    let proxy = serve(
        &dir,
        &single_pool(
            &format!(
                r#"{{ kind = "plugin", plugin = {{ path = "{}" }} }}"#,
                fixtures::LEGACY_BALANCER
            ),
            &instances(&ups),
        ),
    );
    // It ranks the last candidate first: every request goes to u2.
    for _ in 0..6 {
        assert_eq!(
            get(&client(), &format!("{}/", proxy.url)).await,
            (200, "u2".to_string())
        );
    }
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.contains("legacy-balancer (switchyard:plugin@0.1.0) configured"))
    );
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

/// A pool of `ups` whose failover policy is the plugin at `path`, with one
/// retry allowed.
fn failover_pool(path: &str, ups: &[switchyard_tests::upstream::Upstream]) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\ninstances = {}\nretry = {{ retries = 1 }}\n\
         failover = {{ kind = \"plugin\", plugin = {{ path = \"{path}\", call_deadline_ms = 1000 }} }}\n",
        instances(ups)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_plugin_built_against_wit_0_1_1_still_loads_and_decides() {
    let ups = upstreams(2);
    for u in &ups {
        u.set_status(503);
    }
    let dir = tempfile::tempdir().unwrap();
    // Built from a frozen copy of `switchyard:plugin@0.1.1`, before
    // `request-needs`: it exports the failover interface alone.
    let (ok, report) = switchyard_cli(&["plugin", "check", fixtures::LEGACY_FAILOVER]);
    assert!(ok, "{report}");
    assert!(
        report.contains("switchyard:plugin/failover@0.1.1"),
        "{report}"
    );
    assert!(!report.contains("request-needs"), "{report}");
    let proxy = serve(&dir, &failover_pool(fixtures::LEGACY_FAILOVER, &ups));
    let response = client()
        .get(format!("{}/", proxy.url))
        .header("x-request-id", "r-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    // Its static answer, and no request header reached it.
    assert_eq!(response.text().await.unwrap(), "legacy-failover headers=0");
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.contains("legacy-failover (switchyard:plugin@0.1.1) configured"))
    );
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_plugin_gets_the_request_headers_it_asked_for() {
    let ups = upstreams(2);
    for u in &ups {
        u.set_status(503);
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &failover_pool(fixtures::FAILOVER_STATIC, &ups));
    // It retries once elsewhere, then answers naming `x-request-id`, the
    // header its `request-needs` asked for.
    let response = client()
        .get(format!("{}/", proxy.url))
        .header("x-request-id", "req-42")
        .header("x-other", "not asked for")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["request_id"], "req-42");
    assert_eq!(ups[0].hits() + ups[1].hits(), 2);
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_plugin_gets_the_request_headers_it_asked_for() {
    let ups = upstreams(2);
    ups[0].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\n[routes.fan_out]\n\
         sources = [{{ pool = \"s0\" }}, {{ pool = \"s1\" }}]\nearly_exit = false\n\
         resolver = {{ kind = \"plugin\", plugin = {{ path = \"{}\", call_deadline_ms = 1000 }} }}\n\
         [pools.s0]\ninstances = [{{ url = \"{}\" }}]\n[pools.s1]\ninstances = [{{ url = \"{}\" }}]\n",
        fixtures::RESOLVER_FIRST,
        ups[0].url(),
        ups[1].url()
    );
    let proxy = serve(&dir, &toml);
    let response = client()
        .get(format!("{}/", proxy.url))
        .header("x-fusion-tag", "blue")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-fusion-tag-seen"], "blue");
    assert_eq!(response.text().await.unwrap(), "u1");
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_stops_a_spinning_plugin_deterministically() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ mode = "loop" }}, call_deadline_ms = 60000, fuel_per_call = 1000000 }} }}"#,
        fixtures::HOSTILE_BALANCER
    );
    // Without fuel metering the budget is refused, naming the switch.
    let (ok, refused) = {
        let config = switchyard_tests::process::write_config(
            dir.path(),
            &single_pool(&strategy, &instances(&ups)),
        );
        switchyard_cli(&["check", "--config", config.to_str().unwrap()])
    };
    assert!(!ok && refused.contains("plugin_fuel = true"), "{refused}");
    let proxy = serve(
        &dir,
        &format!(
            "plugin_fuel = true\n{}",
            single_pool(&strategy, &instances(&ups))
        ),
    );
    // The 60 s deadline never fires: the budget does, after a million units.
    assert_eq!(get(&client(), &format!("{}/", proxy.url)).await.0, 200);
    let fault = proxy.wait_for_log("plugin fault;");
    assert!(
        fault.contains("used up its fuel budget of 1000000 per call"),
        "{fault}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_plugin_answering_an_impossible_status_is_a_fault_and_the_built_in_decides() {
    let ups = upstreams(2);
    for u in &ups {
        u.set_status(503);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = failover_pool(fixtures::FAILOVER_STATIC, &ups).replace(
        "call_deadline_ms = 1000",
        "call_deadline_ms = 1000, config = { status = 1000 }",
    );
    let proxy = serve(&dir, &toml);
    let response = client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    // The built-in policy's answer: the last instance's 503, passed on.
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_none());
    proxy.wait_for(
        |l| l.contains("plugin fault") && l.contains("respond with status 1000"),
        "the fault, naming the status",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_dropped_in_is_not_read_over_and_over() {
    let ups = upstreams(1);
    let (_dir, plugins, proxy) = watching_a_plugins_dir(&ups);
    std::fs::copy(fixtures::LATENCY_P2C, plugins.join("new.wasm")).unwrap();
    proxy.wait_for_log("plugin available");
    // Absence needs a wait: a watcher that took its own reads for changes
    // read (and hashed) the file again within every debounce period
    // (250 ms), 8 times in 2 s. One more reading is allowed: on a loaded
    // machine the copy's last write may come in a debounce period of its
    // own.
    let before = proxy.bytes_read();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let read = proxy.bytes_read() - before;
    let size = std::fs::metadata(plugins.join("new.wasm")).unwrap().len();
    assert!(
        read < 2 * size,
        "{read} bytes read in 2 s with no change and no traffic (the plugin is {size})"
    );
    let announced = proxy
        .log()
        .iter()
        .filter(|l| l.contains("plugin available"))
        .count();
    assert_eq!(announced, 1, "one new file, one announcement");
}
