//! Managed upstreams: real processes started, supervised and restarted by
//! a real `switchyard` (`tests/process/server.py`, Python's http.server).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::process::{Switchyard, write_config};

use crate::{BINARY, admin, client};

/// `tests/process/server.py`.
fn server() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/process/server.py")
        .display()
        .to_string()
}

/// A config with an admin listener, a route to pool `web`, and `pools`.
fn config(pools: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"web\"\n{pools}"
    )
}

/// `[pools.NAME]` running `server.py {port} NAME-{replica} EXTRA…` in `replicas`
/// replicas, checked at `/healthz` every 300 ms; `more` adds pool keys.
fn managed(name: &str, replicas: u32, extra: &[&str], more: &str) -> String {
    let mut args = vec![server(), "{port}".into(), format!("{name}-{{replica}}")];
    args.extend(extra.iter().map(|a| (*a).to_string()));
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[pools.{name}]\nhealth = {{ path = \"/healthz\", interval_ms = 300, timeout_ms = 250, rise = 1, fall = 2 }}\n{more}\n\
         [pools.{name}.process]\ncommand = \"python3\"\nargs = [{}]\nreplicas = {replicas}\nstop_timeout_ms = 2000\n",
        args.join(", ")
    )
}

/// Waits (polling, within a generous bound) until the replicas of `pool`
/// satisfy `ok`; returns them.
async fn replicas_until(
    api: &str,
    pool: &str,
    what: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = admin(
            reqwest::Method::GET,
            &format!("{api}/v1/pools/{pool}/processes"),
            None,
        )
        .await;
        if status == 200 && ok(body.as_array().map_or(&[][..], Vec::as_slice)) {
            return body.as_array().cloned().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where in the log `pool P: replica 0 WHAT` stands for each of `pools`.
fn log_order(proxy: &Switchyard, what: &str, pools: &[&str]) -> Vec<usize> {
    let log = proxy.log();
    pools
        .iter()
        .map(|pool| {
            let needle = format!("pool {pool}: replica 0 {what}");
            log.iter()
                .position(|l| l.contains(&needle))
                .unwrap_or_else(|| panic!("no `{needle}` in the log"))
        })
        .collect()
}

fn all_ready(n: usize) -> impl Fn(&[Value]) -> bool {
    move |r: &[Value]| r.len() == n && r.iter().all(|r| r["state"] == "ready")
}

fn pids(replicas: &[Value]) -> Vec<u32> {
    replicas
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead too: its state is `Z`.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits until none of `pids` runs.
fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "processes left: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_restarted_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = Switchyard::serve(
        BINARY,
        &write_config(dir.path(), &config(&managed("web", 2, &[], ""))),
    );
    let api = proxy.admin_url();
    let ready = replicas_until(&api, "web", "two replicas ready", all_ready(2)).await;
    let before = pids(&ready);
    // Traffic all along: a GET is retried on the other replica.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (proxy.url.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = client()
                    .get(format!("{url}/"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                sent += 1;
                failed += usize::from(!ok);
            }
            (sent, failed)
        })
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(before[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let after = replicas_until(&api, "web", "replica 0 restarted and ready", |r| {
        all_ready(2)(r)
            && r[0]["restarts"] == 1
            && r[0]["pid"].as_u64() != Some(u64::from(before[0]))
    })
    .await;
    assert!(
        after[0]["exit_status"]
            .as_str()
            .unwrap()
            .contains("signal: 9"),
        "{after:?}"
    );
    // It takes traffic again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "both replicas answer: {seen:?}");
        let r = client()
            .get(format!("{}/", proxy.url))
            .send()
            .await
            .unwrap();
        seen.insert(r.text().await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.await.unwrap();
    assert!(sent > 10, "{sent} requests");
    assert_eq!(failed, 0, "of {sent} requests");
    proxy.wait_for_log("pool web: replica 0 restarted after 0 ms");
    // Stopped: no process left.
    let running = pids(&after);
    proxy.terminate();
    proxy.wait_exit();
    wait_gone(&running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processes_die_with_a_killed_switchyard() {
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = Switchyard::serve(
        BINARY,
        &write_config(dir.path(), &config(&managed("web", 2, &[], ""))),
    );
    let api = proxy.admin_url();
    let running = pids(&replicas_until(&api, "web", "two replicas ready", all_ready(2)).await);
    assert!(running.iter().all(|p| alive(*p)));
    // No shutdown of any kind: the kernel kills them (PR_SET_PDEATHSIG).
    proxy.kill_hard();
    wait_gone(&running);
}

/// Restarts replica 0 of pool `web` through the API (202: accepted).
async fn restart_web_0(api: &str) {
    let (status, _) = admin(
        reqwest::Method::POST,
        &format!("{api}/v1/pools/web/processes/0/restart"),
        None,
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_replica_backs_off_in_tiers_then_is_left_in_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    // Crashes after its first request; the health probes do not count.
    let pool = managed("web", 1, &["--crash-after", "1"], "")
        + "restart_backoff_ms = [0, 300, 600]\nmax_restarts = 3\nrestart_window_ms = 600000\n";
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(&pool)));
    let api = proxy.admin_url();
    for tier in ["after 0 ms", "after 300 ms", "after 600 ms"] {
        replicas_until(&api, "web", "ready", all_ready(1)).await;
        let _ = client().get(format!("{}/", proxy.url)).send().await;
        proxy.wait_for_log(&format!("pool web: replica 0 restarted {tier}"));
    }
    // The fourth crash is one too many within the window.
    replicas_until(&api, "web", "ready", all_ready(1)).await;
    let _ = client().get(format!("{}/", proxy.url)).send().await;
    proxy.wait_for_log("replica 0 restarted 3 times within 600000 ms");
    let replicas =
        replicas_until(&api, "web", "crash-loop", |r| r[0]["state"] == "crash-loop").await;
    assert_eq!(replicas[0]["restarts"], 3, "{replicas:?}");
    let (_, metrics) = crate::get(&crate::client(), &format!("{api}/metrics")).await;
    assert!(
        metrics.contains("switchyard_process_restarts_total{pool=\"web\",replica=\"0\"} 3"),
        "{metrics}"
    );
    assert!(
        replicas[0]["exit_status"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{replicas:?}"
    );
    // The pool runs with what is left (nothing); a restart through the API
    // brings it back.
    restart_web_0(&api).await;
    replicas_until(&api, "web", "ready after the restart", all_ready(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restart_of_a_crash_loop_and_of_the_api_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    // A command that exits at once, never ready: restarted after 0, 500
    // and 1000 ms, then left in crash-loop (the default cooldown, 30 s,
    // in force).
    let pool = "[pools.web]\n[pools.web.process]\ncommand = \"false\"\nreplicas = 1\n\
                restart_backoff_ms = [0, 500, 1000]\nmax_restarts = 3\nrestart_window_ms = 600000\n";
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(pool)));
    let api = proxy.admin_url();
    let mut events = crate::follow_events(&api, "process").await;
    let seen = crate::read_events_until(&mut events, "process_crash_loop").await;
    for tier in ["after 0 ms", "after 500 ms", "after 1000 ms"] {
        assert!(
            seen.contains(&format!("replica 0 restarted {tier}")),
            "no event of the restart {tier}: {seen}"
        );
    }
    // A restart through the API, out of the crash loop, is one too.
    restart_web_0(&api).await;
    let seen = crate::read_events_until(&mut events, "asked through the API").await;
    assert!(
        seen.contains("replica 0 restarted out of crash-loop (asked through the API)"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_start_in_dependency_order_and_stop_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    // web depends on api, api on db: db starts first, web last.
    let pools = managed("web", 1, &[], "depends_on = [\"api\"]")
        + &managed("api", 1, &[], "depends_on = [\"db\"]")
        + &managed("db", 1, &[], "");
    let mut proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(&pools)));
    let api = proxy.admin_url();
    replicas_until(&api, "web", "web ready", all_ready(1)).await;
    let started = log_order(&proxy, "started", &["db", "api", "web"]);
    assert!(
        started[0] < started[1] && started[1] < started[2],
        "{started:?}"
    );
    proxy.terminate();
    proxy.wait_exit();
    let stopped = log_order(&proxy, "stopped (", &["web", "api", "db"]);
    assert!(
        stopped[0] < stopped[1] && stopped[1] < stopped[2],
        "{stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_becomes_healthy_never_joins_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let pools = managed("web", 1, &["--unhealthy"], "")
        + "ready_timeout_ms = 1000\nrestart_backoff_ms = [200]\n";
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(&pools)));
    let api = proxy.admin_url();
    proxy.wait_for_log("stopped: not ready within ready_timeout_ms (1000)");
    let (_, pool) = admin(reqwest::Method::GET, &format!("{api}/v1/pools/web"), None).await;
    assert_eq!(pool["instances"], serde_json::json!([]), "{pool}");
    let (status, _) = crate::get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_through_the_api_drains_and_a_stubborn_replica_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pools = managed("web", 1, &["--ignore-term"], "");
    let mut proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(&pools)));
    let api = proxy.admin_url();
    replicas_until(&api, "web", "one ready", all_ready(1)).await;
    let scale = format!("{api}/v1/pools/web/processes");
    let patch = |n: u32| {
        admin(
            reqwest::Method::PATCH,
            &scale,
            Some(serde_json::json!({ "replicas": n })),
        )
    };
    let (status, body) = patch(3).await;
    assert_eq!(status, 200, "{body}");
    let three = replicas_until(&api, "web", "three ready", all_ready(3)).await;
    let (_, pool) = admin(reqwest::Method::GET, &format!("{api}/v1/pools/web"), None).await;
    assert_eq!(
        pool["instances"].as_array().map(Vec::len),
        Some(3),
        "{pool}"
    );
    // Down to one: replicas 1 and 2 are drained, then stopped; they ignore
    // SIGTERM, so SIGKILL ends them after stop_timeout_ms.
    let (status, body) = patch(1).await;
    assert_eq!(status, 200, "{body}");
    let left = replicas_until(&api, "web", "one left", |r| {
        r.len() == 1 && r[0]["state"] == "ready"
    })
    .await;
    assert_eq!(left[0]["pid"], three[0]["pid"]);
    let gone: Vec<u32> = pids(&three[1..]);
    wait_gone(&gone);
    proxy.wait_for_log("replica 2 stopped (signal: 9");
    // Each was drained before it was stopped.
    for replica in &three[1..] {
        proxy.wait_for_log(&format!("127.0.0.1:{} draining", replica["port"]));
    }
    let (_, pool) = admin(reqwest::Method::GET, &format!("{api}/v1/pools/web"), None).await;
    assert_eq!(
        pool["instances"].as_array().map(Vec::len),
        Some(1),
        "{pool}"
    );
    // Up, down and at once up again: replica 1 comes back even while it is
    // still being stopped.
    for n in [2, 1, 2] {
        let (status, body) = patch(n).await;
        assert_eq!(status, 200, "{body}");
    }
    let left = replicas_until(&api, "web", "two ready again", all_ready(2)).await;
    let running = pids(&left);
    proxy.terminate();
    proxy.wait_exit();
    wait_gone(&running);
}

#[test]
fn a_stdio_mcp_server_is_served_over_http_with_a_process_per_session() {
    use switchyard_tests::mcp::{client, sdk_python};
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/stdio_server.py");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"tools\"] }}\n\
         [pools.tools]\n[pools.tools.process]\ncommand = \"{}\"\nargs = [\"{}\"]\ntransport = \"stdio\"\nmax_processes = 4\n",
        sdk_python().display(),
        script.display()
    );
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config));
    let api = proxy.admin_url();
    let url = format!("{}/mcp", proxy.url);
    // The bridge is ready (its port) before any server process runs.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(replicas_until(
            &api,
            "tools",
            "the bridge ready",
            all_ready(1),
        ));
    let steps = serde_json::json!([
        { "op": "tools" },
        { "op": "call", "tool": "echo", "args": { "text": "hi" } },
        { "op": "call", "tool": "pid" },
        { "op": "call", "tool": "pid" },
    ]);
    let first = client(&url, &steps);
    let tools: Vec<&str> = first[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"echo") && tools.contains(&"crash"),
        "{tools:?}"
    );
    assert_eq!(first[1]["text"], "stdio: hi");
    // One process per session: the same within one, another for the next.
    assert_eq!(first[2]["text"], first[3]["text"]);
    let second = client(&url, &steps);
    assert_ne!(first[2]["text"], second[2]["text"]);
    // A crashed server's session is told to initialize again.
    let crashed = client(
        &url,
        &serde_json::json!([
            { "op": "call", "tool": "crash" },
            { "op": "call", "tool": "echo", "args": { "text": "after" } },
        ]),
    );
    assert!(
        crashed[0].to_string().contains("initialize a new session")
            || crashed[0]["exception"].is_string(),
        "{crashed:?}"
    );
    assert!(crashed[1]["exception"].is_string(), "{crashed:?}");
    let fresh = client(
        &url,
        &serde_json::json!([{ "op": "call", "tool": "echo", "args": { "text": "again" } }]),
    );
    assert_eq!(fresh[0]["text"], "stdio: again");
}

#[test]
fn a_shared_stdio_mcp_server_serves_every_session() {
    use switchyard_tests::mcp::{client, sdk_python};
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/stdio_server.py");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"tools\"] }}\n\
         [pools.tools]\n[pools.tools.process]\ncommand = \"{}\"\nargs = [\"{}\"]\ntransport = \"stdio\"\nstdio_sessions = \"shared\"\n",
        sdk_python().display(),
        script.display()
    );
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config));
    proxy.wait_for_log("pool tools: replica 0 started (pid ");
    let url = format!("{}/mcp", proxy.url);
    let steps = serde_json::json!([{ "op": "call", "tool": "pid" }, { "op": "call", "tool": "echo", "args": { "text": "x" } }]);
    let (a, b) = (client(&url, &steps), client(&url, &steps));
    assert_eq!(a[0]["text"], b[0]["text"], "one process for both sessions");
    assert_eq!(b[1]["text"], "stdio: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_its_checks_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("unhealthy");
    let flag_arg = flag.display().to_string();
    let pools = managed("web", 1, &["--unhealthy-if", &flag_arg], "")
        + "restart_after_failed_checks = 2\nrestart_backoff_ms = [0]\n";
    let proxy = Switchyard::serve(BINARY, &write_config(dir.path(), &config(&pools)));
    let api = proxy.admin_url();
    let first = replicas_until(&api, "web", "ready", all_ready(1)).await;
    std::fs::write(&flag, "").unwrap();
    proxy.wait_for_log("2 failed checks in a row");
    std::fs::remove_file(&flag).unwrap();
    let again = replicas_until(&api, "web", "ready again, restarted", |r| {
        all_ready(1)(r) && r[0]["restarts"] == 1
    })
    .await;
    assert_ne!(first[0]["pid"], again[0]["pid"]);
}

#[test]
fn process_config_errors_name_the_key() {
    use switchyard::config::Config;
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n";
    let run = "[pools.b.process]\ncommand = \"true\"\n";
    for (pools, key, reason) in [
        (
            format!(
                "[pools.a]\ndepends_on = [\"b\"]\n[pools.a.process]\ncommand = \"true\"\n[pools.b]\ndepends_on = [\"a\"]\n{run}"
            ),
            "depends_on",
            "a dependency cycle: a -> b -> a",
        ),
        (
            format!(
                "[pools.a]\ndepends_on = [\"c\"]\n[pools.a.process]\ncommand = \"true\"\n[pools.b]\n{run}"
            ),
            "pools.a.depends_on[0]",
            "unknown pool `c`",
        ),
        (
            "[pools.b]\n[pools.b.process]\ncommand = \"true\"\nreplicas = 2\nports = [9000]\n"
                .to_string(),
            "pools.b.process.ports",
            "1 ports for 2 replicas",
        ),
        (
            "[pools.b]\n[pools.b.process]\ncommand = \"true\"\nstop_signal = \"SIGKILL\"\n"
                .to_string(),
            "pools.b.process.stop_signal",
            "one of SIGTERM",
        ),
        (
            "[pools.b]\n[pools.b.process]\ncommand = \"true\"\nrestart_backoff_ms = []\n"
                .to_string(),
            "pools.b.process.restart_backoff_ms",
            "at least one tier",
        ),
        (
            "[pools.b]\ninstances = []\n".to_string(),
            "pools.b.instances",
            "at least one instance",
        ),
    ] {
        let text = format!("{base}{pools}");
        let err = Config::parse(
            &text,
            Path::new("f.toml"),
            Path::new("."),
            &switchyard::loaders::Loaders,
        )
        .expect_err(&pools)
        .to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains(reason), "{reason}: {err}");
    }
}
