//! Config files: every example parses; every bad file is refused with the
//! file, the key and the reason.

use switchyard_tests::fixtures;
use switchyard_tests::process::{Switchyard, write_config};

use crate::BINARY;

/// Runs `switchyard serve` on `toml` and returns its exit code and log.
fn refused(dir: &tempfile::TempDir, toml: &str) -> (Option<i32>, String) {
    let path = write_config(dir.path(), toml);
    let mut process = Switchyard::spawn(BINARY, &["serve", "--config"], &path);
    let status = process.wait_exit();
    // The log readers may still be draining the pipes: wait for the error line.
    process.wait_for_log("error:");
    (status.code(), process.log().join("\n"))
}

const LISTENER: &str = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn bad_configs_are_refused_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_component = dir.path().join("text.wasm");
    std::fs::write(&not_a_component, "this is not wasm").unwrap();
    // The smallest valid core module: magic and version 1, no sections.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(
                "{LISTENER}[pools.p]\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\nretries = 3\n"
            ),
            vec!["unknown field `retries`", "line 5"],
        ),
        (
            format!(
                "{LISTENER}[[routes]]\npool = \"missing\"\n[pools.p]\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n"
            ),
            vec!["routes[0].pool", "unknown pool `missing`"],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\nmax_idle_connections = 70000\n"
            ),
            vec![
                "pools.p.max_idle_connections",
                "70000 is out of range: 0..=65536",
            ],
        ),
        (
            format!("{LISTENER}[pools.p]\ninstances = [{{ url = \"ftp://127.0.0.1:1\" }}]\n"),
            vec!["pools.p.instances[0].url", "must start with `http://`"],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\ninstances = [{{ url = \"https://127.0.0.1\" }}]\ntls = {{ ca_file = \"missing-ca.pem\" }}\n"
            ),
            vec!["pools.p.tls.ca_file", "missing-ca.pem"],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"nope.wasm\" }} }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n"
            ),
            vec![
                "pools.p.strategy.plugin.path",
                "nope.wasm",
                "does not exist",
            ],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"fastest\" }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n"
            ),
            vec!["unknown variant `fastest`"],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"text.wasm\" }} }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n"
            ),
            vec![
                "pools.p.strategy",
                "text.wasm",
                "not a WebAssembly component",
                "no `\\0asm` magic",
            ],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"core.wasm\" }} }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n"
            ),
            vec!["core.wasm", "core WebAssembly module", "wasm32-wasip2"],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"{}\" }} }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n",
                fixtures::JSON_HEALTH
            ),
            vec![
                "json_health.wasm",
                "is not a balancer plugin",
                "switchyard:plugin/health-check@0.1.3",
            ],
        ),
        (
            format!(
                "{LISTENER}[pools.p]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"{}\", config = {{ percent = 150 }} }} }}\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n",
                fixtures::CANARY_SPLIT
            ),
            vec![
                "canary_split.wasm",
                "invalid config",
                "`percent` must be 0..=100",
            ],
        ),
    ];
    let pool = |strategy: &str, instance: &str| {
        format!("{LISTENER}[pools.p]\nstrategy = {strategy}\ninstances = [{instance}]\n")
    };
    let one = r#"{ url = "http://127.0.0.1:1" }"#;
    let strategy_cases = [
        (
            pool(
                r#"{ kind = "round-robin" }"#,
                r#"{ url = "http://127.0.0.1:1", weight = 0 }"#,
            ),
            vec!["pools.p.instances[0].weight", "must be >= 1"],
        ),
        (
            pool(
                r#"{ kind = "round-robin" }"#,
                r#"{ url = "http://127.0.0.1:1", weight = -2 }"#,
            ),
            vec!["weight = -2", "invalid value"],
        ),
        (
            pool(r#"{ kind = "consistent-hash", key = "body:x" }"#, one),
            vec!["unknown hash key source `body:x`"],
        ),
        (
            pool(r#"{ kind = "consistent-hash", key = "header:" }"#, one),
            vec!["`header:` needs a name"],
        ),
        (
            pool(r#"{ kind = "consistent-hash" }"#, one),
            vec!["missing field `key`"],
        ),
        (
            pool(
                r#"{ kind = "consistent-hash", key = "path", bounded_load_factor = 0.8 }"#,
                one,
            ),
            vec![
                "pools.p.strategy.bounded_load_factor",
                "must be >= 1.0, got 0.8",
            ],
        ),
        (
            pool(
                r#"{ kind = "consistent-hash", key = "path", algorithm = "maglev", table_size = 65536 }"#,
                one,
            ),
            vec!["pools.p.strategy.table_size", "must be a prime"],
        ),
        (
            pool(r#"{ kind = "least-connections", choice_count = 1 }"#, one),
            vec!["pools.p.strategy.choice_count", "must be >= 2, got 1"],
        ),
        (
            pool(r#"{ kind = "resource-aware", min_weight_factor = 0 }"#, one),
            vec!["pools.p.strategy.min_weight_factor"],
        ),
        (
            pool(
                r#"{ kind = "weighted-round-robin", choice_count = 2 }"#,
                one,
            ),
            vec!["unknown field `choice_count`"],
        ),
    ];
    let sticky_cases = [(
        pool(r#"{ kind = "random" }"#, one) + "sticky = { cookie = \"a\", header = \"b\" }\n",
        vec![
            "pools.p.sticky.cookie",
            "exactly one of `cookie` and `header`",
        ],
    )];
    let health_cases = [
        (
            pool(r#"{ kind = "random" }"#, one)
                + "health = { interval_ms = 1000, timeout_ms = 1000 }\n",
            vec!["pools.p.health.timeout_ms", "below interval_ms (1000)"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "health = { rise = 0 }\n",
            vec!["pools.p.health.rise", "must be >= 1"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "health = { kind = \"grpc\" }\n",
            vec![
                "pools.p.health.kind",
                "needs the pool's `protocol = \"h2\"`",
            ],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "health = { kind = \"dns\" }\n",
            vec!["unknown variant `dns`"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "outlier = { max_ejection_percent = 150 }\n",
            vec!["pools.p.outlier.max_ejection_percent", "0..=100"],
        ),
    ];
    let failover_cases = [
        (
            pool(r#"{ kind = "random" }"#, one) + "breaker = { failure_rate = 1.5 }\n",
            vec!["pools.p.breaker.failure_rate", "must be in (0, 1], got 1.5"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "bulkhead = { max_concurrent = 0 }\n",
            vec!["pools.p.bulkhead.max_concurrent", "must be >= 1"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "retry = { retries = -1 }\n",
            vec!["retries = -1", "invalid value"],
        ),
        (
            pool(r#"{ kind = "random" }"#, one) + "retry = { retry_on = [\"always\"] }\n",
            vec!["unknown variant `always`"],
        ),
        (
            format!(
                "{LISTENER}[[routes]]\npool = \"p\"\nfallback = {{ pool = \"nope\" }}\n[pools.p]\ninstances = [{one}]\n"
            ),
            vec!["routes[0].fallback.pool", "unknown pool `nope`"],
        ),
    ];
    let cases = cases
        .into_iter()
        .chain(strategy_cases)
        .chain(sticky_cases)
        .chain(health_cases)
        .chain(failover_cases);
    for (toml, expected) in cases {
        let (code, log) = refused(&dir, &toml);
        assert_eq!(code, Some(1), "accepted:\n{toml}\nlog:\n{log}");
        assert!(log.contains("config.toml"), "no file name in:\n{log}");
        for needle in expected {
            assert!(
                log.contains(needle),
                "`{needle}` missing from:\n{log}\nfor:\n{toml}"
            );
        }
    }
}

#[test]
fn every_example_config_parses() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dir = tempfile::tempdir().unwrap();
    // Examples name the example plugin beside them, as a user copies it.
    std::fs::copy(fixtures::CANARY_SPLIT, dir.path().join("canary_split.wasm")).unwrap();
    std::fs::copy(
        fixtures::MCP_FEDERATION,
        dir.path().join("mcp_federation.wasm"),
    )
    .unwrap();
    crate::examples::tls_example_certificates(dir.path());
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Schemas and other files the examples name.
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        std::fs::copy(path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut parsed = 0;
    for path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let copy = dir.path().join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            switchyard::config::Config::load(&copy, &switchyard::loaders::Loaders)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            parsed += 1;
        }
    }
    assert!(
        parsed >= 2,
        "only {parsed} examples found in {}",
        examples.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_listener_needs_authentication_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "{LISTENER}[[routes]]\npool = \"p\"\n[pools.p]\ninstances = [{{ url = \"http://127.0.0.1:1\" }}]\n\
         [admin]\nlisten = \"0.0.0.0:0\"\n"
    );
    // No token, no client certificates: refused, naming the key.
    let (code, log) = refused(&dir, &base);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("admin.listen") && log.contains("no authentication"),
        "{log}"
    );
    // With a token it starts (the token is what protects it).
    let token = dir.path().join("token");
    std::fs::write(&token, "secret\n").unwrap();
    let with_token = Switchyard::serve(
        BINARY,
        &write_config(dir.path(), &format!("{base}token_file = \"token\"\n")),
    );
    with_token.admin_url();
    drop(with_token);
    // Said to be insecure: it starts, with a warning at start and in
    // /v1/status.
    let open = Switchyard::serve(
        BINARY,
        &write_config(dir.path(), &format!("{base}insecure = true\n")),
    );
    let api = open.admin_url().replace("0.0.0.0", "127.0.0.1");
    let warning = open.wait_for_log("has no authentication");
    assert!(warning.contains("WARN"), "{warning}");
    let (status, body) =
        crate::admin(reqwest::Method::GET, &format!("{api}/v1/status"), None).await;
    assert_eq!(status, 200);
    assert!(
        body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("no authentication")),
        "{body}"
    );
}
