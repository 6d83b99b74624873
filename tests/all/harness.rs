//! The plugin test harness (`switchyard::plugin::testing`): each example
//! plugin's built `.wasm` loaded in the real sandbox and fed by hand — no
//! proxy, no upstreams. These are the examples the Writing plugins guide
//! points plugin authors to.

use std::path::Path;

use bytes::Bytes;
use switchyard::failover::{AttemptFacts, Decision, FailoverPolicy};
use switchyard::health::HealthCheck;
use switchyard::health::active::{Probe, ProbeAnswer, VerdictHealth};
use switchyard::plugin::testing::{self, BalancerHarness, endpoint};
use switchyard::policy::AttemptOutcome;
use switchyard::policy::RequestContext;

/// A `method` request for `path` on `example.com` from 127.0.0.1:40000.
fn request<'a>(
    method: &'a http::Method,
    path: &'a str,
    headers: &'a http::HeaderMap,
) -> RequestContext<'a> {
    RequestContext {
        method,
        authority: "example.com",
        path,
        headers,
        client_addr: ([127, 0, 0, 1], 40_000).into(),
    }
}
use switchyard_tests::fixtures;

fn pool(labels: &[&str]) -> Vec<std::sync::Arc<switchyard::balance::Endpoint>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, value)| {
            endpoint(
                i as u32,
                &format!("http://10.0.0.{i}:80"),
                1,
                &[("track", value), ("region", value)],
            )
        })
        .collect()
}

#[test]
fn canary_split_sends_its_percentage_to_the_canary() {
    let lb = BalancerHarness::load(
        Path::new(fixtures::CANARY_SPLIT),
        r#"{"percent": 25}"#,
        pool(&["stable", "stable", "canary"]),
    )
    .unwrap();
    let firsts: Vec<u32> = (0..100).map(|_| lb.pick(&[]).unwrap()[0]).collect();
    assert_eq!(firsts.iter().filter(|id| **id == 2).count(), 25);
    // The ranking lists the other group after the chosen one.
    assert_eq!(lb.pick(&[]).unwrap().len(), 3);
    assert_eq!(lb.stats().faults(), 0);
}

#[test]
fn canary_split_refuses_a_bad_percentage_at_load() {
    let err = BalancerHarness::load(
        Path::new(fixtures::CANARY_SPLIT),
        r#"{"percent": 150}"#,
        pool(&["stable"]),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("percent"), "{err}");
}

#[test]
fn label_affinity_ranks_the_matching_region_first() {
    let lb = BalancerHarness::load(
        Path::new(fixtures::LABEL_AFFINITY),
        "{}",
        pool(&["a", "b", "a"]),
    )
    .unwrap();
    for _ in 0..4 {
        assert_eq!(lb.pick(&[("x-region", "b")]).unwrap()[0], 1);
    }
    let a: Vec<u32> = (0..4)
        .map(|_| lb.pick(&[("x-region", "a")]).unwrap()[0])
        .collect();
    assert!(a.iter().all(|id| *id == 0 || *id == 2), "{a:?}");
    assert!(
        a.contains(&0) && a.contains(&2),
        "round robin among matches: {a:?}"
    );
}

#[test]
fn latency_p2c_ranks_candidates_it_was_given() {
    let lb = BalancerHarness::load(
        Path::new(fixtures::LATENCY_P2C),
        "{}",
        pool(&["a", "b", "c"]),
    )
    .unwrap();
    for _ in 0..20 {
        let ranking = lb.pick(&[]).unwrap();
        assert!(
            !ranking.is_empty() && ranking.iter().all(|id| *id < 3),
            "{ranking:?}"
        );
    }
}

#[test]
fn a_faulting_plugin_comes_back_as_a_fault() {
    let lb = BalancerHarness::load(
        Path::new(fixtures::HOSTILE_BALANCER),
        r#"{"mode": "unknown-id"}"#,
        pool(&["a"]),
    )
    .unwrap();
    let fault = lb.pick(&[]).unwrap_err();
    assert!(fault.to_string().contains("unknown endpoint id"), "{fault}");
    assert_eq!(lb.stats().faults(), 1);
}

#[test]
fn json_health_probes_its_path_and_judges_the_status() {
    let check =
        testing::health_check(Path::new(fixtures::JSON_HEALTH), r#"{"path": "/status"}"#).unwrap();
    let target = endpoint(0, "http://10.0.0.1:80", 1, &[]);
    let Probe::Http(spec) = check.probe(&target).unwrap() else {
        panic!("a health plugin asks for an HTTP probe");
    };
    assert_eq!(spec.path, "/status");
    let answer = |body: &'static str| ProbeAnswer::Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from_static(body.as_bytes()),
        latency_us: 800,
    };
    let ok = check
        .evaluate(&target, &answer(r#"{"status": "ok", "load": 0.25}"#))
        .unwrap();
    assert_eq!((ok.health, ok.load), (VerdictHealth::Healthy, Some(0.25)));
    let degraded = check
        .evaluate(&target, &answer(r#"{"status": "warn"}"#))
        .unwrap();
    assert_eq!(degraded.health, VerdictHealth::Degraded);
    let down = check
        .evaluate(&target, &answer(r#"{"status": "down"}"#))
        .unwrap();
    assert_eq!(down.health, VerdictHealth::Unhealthy);
}

#[test]
fn retry_schedule_follows_its_schedule_then_falls_back() {
    let policy = testing::failover(
        Path::new(fixtures::RETRY_SCHEDULE),
        r#"{"delays_ms": [0, 250], "fallback_pool": "backup"}"#,
    )
    .unwrap();
    let headers = http::HeaderMap::new();
    let after = |attempt: u32, failure: AttemptOutcome| AttemptFacts {
        request: request(&http::Method::GET, "/", &headers),
        endpoint: 0,
        failure,
        attempt,
        elapsed_ms: 5,
        tried: &[0],
        replayable: true,
        idempotent: true,
        retries_left: 3,
        untried: 1,
    };
    let delay = |decision| match decision {
        Decision::Retry { delay_ms, .. } => delay_ms,
        _ => None,
    };
    assert_eq!(
        delay(
            policy
                .on_failure(&after(1, AttemptOutcome::Answered(503)))
                .unwrap()
        ),
        Some(0)
    );
    assert_eq!(
        delay(
            policy
                .on_failure(&after(2, AttemptOutcome::Answered(503)))
                .unwrap()
        ),
        Some(250)
    );
    assert!(matches!(
        policy.on_failure(&after(3, AttemptOutcome::Answered(503))).unwrap(),
        Decision::Fallback(pool) if pool == "backup"
    ));
}

#[test]
fn mcp_federation_renames_clashing_tools_from_lower_priority_servers() {
    use switchyard::fusion::{Answer, Outcome, Source, UpstreamResponse};
    let resolver = testing::resolver(Path::new(fixtures::MCP_FEDERATION), "{}").unwrap();
    let sources: Vec<Source> = ["github", "files"]
        .iter()
        .enumerate()
        .map(|(i, name)| Source {
            name: (*name).to_string(),
            priority: i as u32,
            weight: 1.0,
        })
        .collect();
    let answer = |source: usize, tools: &[&str]| {
        let tools: Vec<_> = tools
            .iter()
            .map(|name| serde_json::json!({"name": name, "inputSchema": {"type": "object"}}))
            .collect();
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}});
        Answer {
            source,
            latency_us: 1_000,
            outcome: Outcome::Response(UpstreamResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Bytes::from(body.to_string()),
            }),
            rejected: None,
            json: None,
            key: None,
        }
    };
    let fused = resolver
        .resolve(
            &request(&http::Method::POST, "/mcp", &http::HeaderMap::new()),
            &sources,
            &[
                answer(0, &["search", "issues"]),
                answer(1, &["search", "read"]),
            ],
            &(200..=299),
        )
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&fused.body).unwrap();
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["search", "issues", "files__search", "read"]);
    assert_eq!(
        (body["id"].clone(), fused.conflicts),
        (serde_json::json!(7), 1)
    );
}
