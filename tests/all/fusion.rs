//! Data fusion through the real proxy: fan-out routes over real upstreams
//! that agree, disagree, fail and hang; every resolver, provenance, limits,
//! the cache, and resolver plugins (the MCP federation example, hostile ones).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::fixtures;
use switchyard_tests::upstream::Upstream;

use crate::{client, serve, upstreams};

/// A hung source: answers after a minute, far past every deadline here.
const HUNG: Duration = Duration::from_secs(60);

/// A config with one pool `sN` per upstream and the fan-out `routes`: each
/// `(path_prefix, fan_out table body)`.
fn config(ups: &[Upstream], routes: &[(&str, &str)]) -> String {
    let mut toml = String::from("[[listeners]]\nlisten = \"127.0.0.1:0\"\n");
    for (prefix, fan_out) in routes {
        toml.push_str(&format!(
            "[[routes]]\nmatch = {{ path_prefix = \"{prefix}\" }}\n[routes.fan_out]\n{fan_out}\n"
        ));
    }
    for (i, up) in ups.iter().enumerate() {
        toml.push_str(&format!(
            "[pools.s{i}]\ninstances = [{{ url = \"{}\" }}]\n",
            up.url()
        ));
    }
    toml
}

/// `sources = [{ pool = "s0" }, …]` over `n` pools.
fn sources(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("{{ pool = \"s{i}\" }}")).collect();
    format!("sources = [{}]", list.join(", "))
}

/// `n` upstreams answering `bodies[i]`.
fn answering(bodies: &[&str]) -> Vec<Upstream> {
    let ups = upstreams(bodies.len());
    for (up, body) in ups.iter().zip(bodies) {
        up.set_body(body);
    }
    ups
}

/// A response's status, provenance headers and body.
struct Fused {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Fused {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn fetch(request: reqwest::RequestBuilder) -> Fused {
    let response = request.send().await.expect("request");
    Fused {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

async fn get(url: &str) -> Fused {
    fetch(client().get(url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_wins_on_canonical_json_and_says_where_it_came_from() {
    let ups = answering(&[
        r#"{"v":1,"w":[1,2]}"#,
        r#"{ "w": [1, 2], "v": 1 }"#,
        r#"{"v":2}"#,
    ]);
    let dir = tempfile::tempdir().unwrap();
    // A majority ends the fan-out as soon as it is settled; without early
    // exit the vote sees every answer, the dissenting s2's included.
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"majority\" }}\nearly_exit = false",
        sources(3)
    );
    let proxy = serve(&dir, &config(&ups, &[("/", &fan_out)]));
    let fused = get(&format!("{}/q", proxy.url)).await;
    assert_eq!(fused.status, 200, "{}", fused.body);
    assert_eq!(fused.json(), json!({"v": 1, "w": [1, 2]}));
    assert_eq!(fused.header("x-switchyard-sources"), "s0, s1");
    assert_eq!(fused.header("x-switchyard-conflicts"), "1");
    assert_eq!(fused.header("x-switchyard-agreement"), "0.67");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_majority_is_a_502_with_the_tally_within_the_deadline() {
    let ups = answering(&[r#"{"v":1}"#, r#"{"v":2}"#, r#"{"v":1}"#]);
    ups[2].set_delay(HUNG);
    let dir = tempfile::tempdir().unwrap();
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"majority\" }}\ntimeout_ms = 1000\nsource_timeout_ms = 60000",
        sources(3)
    );
    let proxy = serve(&dir, &config(&ups, &[("/", &fan_out)]));
    let started = Instant::now();
    let fused = get(&format!("{}/q", proxy.url)).await;
    // The hung source would answer after a minute; the deadline ended the wait.
    assert!(started.elapsed() < HUNG / 2, "{:?}", started.elapsed());
    assert_eq!(fused.status, 502, "{}", fused.body);
    let error = fused.json();
    assert_eq!(error["error"], "no_quorum");
    let details = &error["details"];
    assert_eq!(details["needed"], "2 of 3 sources");
    assert_eq!(details["tally"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        details["tally"][0]["sources"],
        json!(["s0"]),
        "tie to priority"
    );
    assert_eq!(details["abstained"]["s2"], "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_success_does_not_wait_for_a_hung_source() {
    let ups = upstreams(2);
    ups[0].set_delay(HUNG);
    let dir = tempfile::tempdir().unwrap();
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"first-success\" }}\ntimeout_ms = 120000\nsource_timeout_ms = 120000",
        sources(2)
    );
    let proxy = serve(&dir, &config(&ups, &[("/", &fan_out)]));
    let started = Instant::now();
    let fused = get(&format!("{}/q", proxy.url)).await;
    assert!(started.elapsed() < HUNG / 2, "{:?}", started.elapsed());
    assert_eq!((fused.status, fused.body.as_str()), (200, "u1"));
    assert_eq!(fused.header("x-switchyard-sources"), "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_takes_the_best_ranked_source_that_answered() {
    let ups = upstreams(3);
    ups[0].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let fan_out = "sources = [{ pool = \"s0\" }, { pool = \"s1\", priority = 5 }, { pool = \"s2\", priority = 1 }]\n\
                   resolver = { kind = \"priority\" }";
    let weighted = "sources = [{ pool = \"s0\", weight = 3.0 }, { pool = \"s1\" }, { pool = \"s2\" }]\n\
                    resolver = { kind = \"weighted-vote\", compare = \"body\" }";
    let proxy = serve(
        &dir,
        &config(&ups, &[("/priority", fan_out), ("/weighted", weighted)]),
    );
    let fused = get(&format!("{}/priority", proxy.url)).await;
    assert_eq!((fused.status, fused.body.as_str()), (200, "u2"));
    // s0 now answers "same", the others "other": weight 3 outvotes 1 + 1.
    ups[0].set_status(200);
    ups[0].set_body("same");
    ups[1].set_body("other");
    ups[2].set_body("other");
    let fused = get(&format!("{}/weighted", proxy.url)).await;
    assert_eq!((fused.status, fused.body.as_str()), (200, "same"));
    assert_eq!(fused.header("x-switchyard-agreement"), "0.33");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_recent_median_merge_and_all() {
    let ups = answering(&[
        r#"{"price": 10, "at": "2026-11-20T10:00:00Z", "name": "a", "tags": {"eu": true}}"#,
        r#"{"price": 30, "at": "2026-11-22T10:00:00Z", "stock": 4, "tags": {"us": true}}"#,
        r#"{"price": 20, "at": "2026-11-21T10:00:00Z", "name": "c"}"#,
    ]);
    let n = sources(3);
    let recent = format!("{n}\nresolver = {{ kind = \"most-recent\", field = \"/at\" }}");
    let median = format!("{n}\nresolver = {{ kind = \"median\", field = \"/price\" }}");
    let merge = format!("{n}\nresolver = {{ kind = \"merge\", on_conflict = \"priority\" }}");
    let all = format!("{n}\nresolver = {{ kind = \"all\" }}");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config(
            &ups,
            &[
                ("/recent", &recent),
                ("/median", &median),
                ("/merge", &merge),
                ("/all", &all),
            ],
        ),
    );
    let fused = get(&format!("{}/recent", proxy.url)).await;
    assert_eq!(fused.json()["price"], 30);
    assert_eq!(fused.header("x-switchyard-sources"), "s1");

    let fused = get(&format!("{}/median", proxy.url)).await;
    assert_eq!(fused.json()["price"], 20.0);
    assert_eq!(fused.json()["name"], "c", "the median source's answer");
    assert_eq!(fused.header("x-switchyard-conflicts"), "2");

    let fused = get(&format!("{}/merge", proxy.url)).await;
    assert_eq!(
        fused.json(),
        json!({"price": 10, "at": "2026-11-20T10:00:00Z", "name": "a", "stock": 4,
               "tags": {"eu": true, "us": true}})
    );
    // price, at and name conflict; the best priority (s0) wins each.
    assert_eq!(fused.header("x-switchyard-conflicts"), "3");
    assert_eq!(fused.header("content-type"), "application/json");

    ups[2].set_status(500);
    let fused = get(&format!("{}/all", proxy.url)).await;
    let items = fused.json();
    assert_eq!(items.as_array().map(Vec::len), Some(3), "{items}");
    assert_eq!(items[0]["source"], "s0");
    assert_eq!(items[1]["body"]["stock"], 4);
    assert_eq!(
        (items[2]["status"].clone(), items[2]["error"].clone()),
        (json!(500), json!("status 500"))
    );
    assert_eq!(fused.header("x-switchyard-sources"), "s0, s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_oversized_and_off_schema_answers_do_not_count() {
    let big = format!("{{\"v\": \"{}\"}}", "x".repeat(4096));
    let ups = answering(&[
        "<html>not json</html>",
        r#"{"v": 1}"#,
        r#"{"v": 1}"#,
        big.as_str(),
        r#"{"v": "one"}"#,
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("v.schema.json"),
        r#"{"type": "object", "required": ["v"], "properties": {"v": {"type": "number"}}}"#,
    )
    .unwrap();
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"quorum\", min_agree = 2 }}\nmax_answer_bytes = 1024\nschema_path = \"v.schema.json\"",
        sources(5)
    );
    let all = format!(
        "{}\nresolver = {{ kind = \"all\" }}\nmax_answer_bytes = 1024\nschema_path = \"v.schema.json\"",
        sources(5)
    );
    let proxy = serve(
        &dir,
        &config(&ups, &[("/quorum", &fan_out), ("/all", &all)]),
    );
    let fused = get(&format!("{}/quorum", proxy.url)).await;
    assert_eq!(fused.status, 200, "{}", fused.body);
    assert_eq!(fused.json(), json!({"v": 1}));
    assert_eq!(fused.header("x-switchyard-agreement"), "1.00");
    let items = get(&format!("{}/all", proxy.url)).await.json();
    let error = |i: usize| items[i]["error"].as_str().unwrap_or("").to_string();
    assert!(error(0).starts_with("not JSON"), "{}", error(0));
    assert!(error(3).contains("max_answer_bytes"), "{}", error(3));
    assert!(
        error(4).contains("schema") && error(4).contains("/v"),
        "{}",
        error(4)
    );
    assert_eq!(error(1), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_gets_413_and_others_reach_every_source() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"all\" }}\nmax_request_body_bytes = 64",
        sources(2)
    );
    let proxy = serve(&dir, &config(&ups, &[("/", &fan_out)]));
    let url = format!("{}/rpc", proxy.url);
    let fused = fetch(client().post(&url).body("x".repeat(65))).await;
    assert_eq!(fused.status, 413, "{}", fused.body);
    assert_eq!(fused.json()["error"], "payload_too_large");
    assert_eq!(ups[0].hits() + ups[1].hits(), 0);
    // Within the limit, every source gets the body (the upstreams echo it).
    let items = fetch(client().post(&url).body(r#"{"q":1}"#)).await.json();
    assert_eq!(items[0]["body"], json!({"q": 1}));
    assert_eq!(items[1]["body"], json!({"q": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_fan_out_asks_k_instances_of_one_pool() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = ups
        .iter()
        .map(|u| format!("{{ url = \"{}\" }}", u.url()))
        .collect();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\n[routes.fan_out]\npool = \"p\"\ncount = 2\n\
         resolver = {{ kind = \"all\" }}\n[pools.p]\ninstances = [{}]\n",
        urls.join(", ")
    );
    let proxy = serve(&dir, &toml);
    let items = get(&format!("{}/", proxy.url)).await.json();
    let items = items.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items[0]["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("p/127.0.0.1:")
    );
    assert_ne!(items[0]["source"], items[1]["source"]);
    assert_eq!(ups.iter().map(Upstream::hits).sum::<u64>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_hits_and_stale_answers_when_fusion_fails() {
    let ups = answering(&[r#"{"v": 1}"#, r#"{"v": 1}"#]);
    let dir = tempfile::tempdir().unwrap();
    let n = sources(2);
    let long = format!("{n}\nresolver = {{ kind = \"majority\" }}\ncache = {{ ttl_ms = 600000 }}");
    let short = format!(
        "{n}\nresolver = {{ kind = \"majority\" }}\ncache = {{ ttl_ms = 300, stale_if_error_ms = 600000 }}"
    );
    let proxy = serve(&dir, &config(&ups, &[("/long", &long), ("/short", &short)]));

    let url = format!("{}/long?id=1", proxy.url);
    let first = get(&url).await;
    assert_eq!(
        (first.status, first.header("x-switchyard-cache")),
        (200, "miss")
    );
    let hits = ups[0].hits();
    let second = get(&url).await;
    assert_eq!(
        (second.status, second.header("x-switchyard-cache")),
        (200, "hit")
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("x-switchyard-sources"),
        "s0, s1",
        "provenance is cached"
    );
    assert_eq!(ups[0].hits(), hits, "a hit asked the sources");
    let other = get(&format!("{}/long?id=2", proxy.url)).await;
    assert_eq!(
        other.header("x-switchyard-cache"),
        "miss",
        "another query, another key"
    );

    let url = format!("{}/short", proxy.url);
    assert_eq!(get(&url).await.header("x-switchyard-cache"), "miss");
    // Every source fails from now on: once the TTL is over, fusion is tried,
    // fails, and the stale answer is served instead of the 502.
    ups[0].set_status(500);
    ups[1].set_status(500);
    // Either source may be the one asked: majority over 2 gives up as soon
    // as one fails and cancels the other, possibly before it is sent.
    let asked = || ups.iter().map(Upstream::hits).sum::<u64>();
    let asked_before = asked();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fused = get(&url).await;
        assert_eq!(fused.status, 200, "{}", fused.body);
        assert_eq!(fused.json(), json!({"v": 1}));
        match fused.header("x-switchyard-cache") {
            "hit" => {}
            "stale" => break,
            other => panic!("unexpected cache state `{other}`"),
        }
        assert!(Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        asked() > asked_before,
        "stale only after asking the sources"
    );
    // Without a cached answer, the failure is the client's: 502.
    let uncached = get(&format!("{}/short?new", proxy.url)).await;
    assert_eq!(uncached.status, 502, "{}", uncached.body);
}

const TOOLS_LIST: &str = r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_federation_merges_tool_lists_and_renames_clashes() {
    let ups = answering(&[
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search","description":"web"},{"name":"fetch"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search","description":"docs"},{"name":"translate"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no tools here"}}"#,
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures::MCP_FEDERATION,
        dir.path().join("mcp_federation.wasm"),
    )
    .unwrap();
    let fan_out = format!(
        "{}\nresolver = {{ kind = \"plugin\", plugin = {{ path = \"mcp_federation.wasm\", call_deadline_ms = 1000 }} }}",
        sources(3)
    );
    let proxy = serve(&dir, &config(&ups, &[("/mcp", &fan_out)]));
    let fused = fetch(
        client()
            .post(format!("{}/mcp", proxy.url))
            .header("content-type", "application/json")
            .body(TOOLS_LIST),
    )
    .await;
    assert_eq!(fused.status, 200, "{}", fused.body);
    let answer = fused.json();
    assert_eq!(answer["id"], 7);
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["search", "fetch", "s1__search", "translate"]);
    assert_eq!(answer["result"]["tools"][2]["description"], "docs");
    assert_eq!(fused.header("x-switchyard-sources"), "s0, s1");
    assert_eq!(fused.header("x-switchyard-conflicts"), "1");
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_resolvers_fall_back_to_the_builtin() {
    const MODES: [&str; 4] = ["trap", "spin", "nonsense", "stranger"];
    let ups = upstreams(2);
    ups[0].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let fan_outs: Vec<(String, String)> = MODES
        .iter()
        .map(|mode| {
            std::fs::copy(fixtures::HOSTILE_RESOLVER, dir.path().join(format!("{mode}.wasm"))).unwrap();
            (
                format!("/{mode}"),
                format!(
                    "{}\nresolver = {{ kind = \"plugin\", plugin = {{ path = \"{mode}.wasm\", config = {{ mode = \"{mode}\" }}, call_deadline_ms = 5 }}, fallback = {{ kind = \"priority\" }} }}",
                    sources(2)
                ),
            )
        })
        .collect();
    let routes: Vec<(&str, &str)> = fan_outs
        .iter()
        .map(|(p, f)| (p.as_str(), f.as_str()))
        .collect();
    let proxy = serve(&dir, &config(&ups, &routes));
    for mode in MODES {
        for _ in 0..2 {
            let fused = get(&format!("{}/{mode}", proxy.url)).await;
            assert_eq!((fused.status, fused.body.as_str()), (200, "u1"), "{mode}");
        }
        let line = proxy.wait_for(
            |l| {
                l.contains("plugin fault")
                    && l.contains(&format!("plugin=\"{mode}.wasm\""))
                    && l.contains("faults=2")
            },
            &format!("2 faults of {mode}.wasm"),
        );
        let reason = match mode {
            "spin" => "call deadline",
            "trap" => "trapped",
            _ => "nonsense",
        };
        assert!(line.contains(reason), "{mode}: {line}");
    }
}

#[test]
fn fan_out_config_errors_name_the_key() {
    use std::path::Path;
    use switchyard::config::Config;
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[pools.a]\ninstances = [{ url = \"http://127.0.0.1:1\" }]\n[[routes]]\n";
    for (route, key, reason) in [
        (
            "pool = \"a\"\nfan_out = { pool = \"a\", resolver = { kind = \"all\" } }",
            "routes[0].pool",
            "exactly one of `pool`, `fan_out` and `mcp`",
        ),
        (
            "fan_out = { resolver = { kind = \"all\" } }",
            "routes[0].fan_out.sources",
            "exactly one of `sources`",
        ),
        (
            "fan_out = { sources = [{ pool = \"b\" }], resolver = { kind = \"all\" } }",
            "routes[0].fan_out.sources[0].pool",
            "unknown pool `b`",
        ),
        (
            "fan_out = { pool = \"a\", resolver = { kind = \"median\", field = \"price\" } }",
            "routes[0].fan_out.resolver.field",
            "did you mean `/price`",
        ),
        (
            "fan_out = { pool = \"a\", resolver = { kind = \"quorum\", min_agree = 0 } }",
            "routes[0].fan_out.resolver.min_agree",
            ">= 1",
        ),
        (
            "fan_out = { pool = \"a\", schema_path = \"missing.json\", resolver = { kind = \"all\" } }",
            "routes[0].fan_out.schema_path",
            "missing.json",
        ),
        (
            "fan_out = { pool = \"a\", resolver = { kind = \"all\" } }\nstale_if_error = {}",
            "routes[0].fan_out",
            "stale_if_error_ms",
        ),
    ] {
        let text = format!("{base}{route}\n");
        let err = Config::parse(
            &text,
            Path::new("f.toml"),
            Path::new("."),
            &switchyard::loaders::Loaders,
        )
        .expect_err(route)
        .to_string();
        assert!(err.starts_with(&format!("f.toml: {key}: ")), "{err}");
        assert!(err.contains(reason), "{err}");
    }
}
