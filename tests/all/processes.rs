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
