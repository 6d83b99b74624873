//! Hardening: what a client, a slow or hostile one, can and cannot do to
//! Switchyard and to the standing of its upstreams.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::{client, get, instances, serve, upstreams};

/// Generous bound on any wait of these tests (the machine is small and noisy).
const WAIT: Duration = Duration::from_secs(30);

/// A raw connection to the listener at `url` (`http://ip:port`).
fn connect(url: &str) -> TcpStream {
    let stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream
}

/// Everything the server sends until it closes the connection (or [`WAIT`]
/// passes: then the test fails).
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection was not closed within {WAIT:?} (after {:?}): {e}; got {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `request` (raw bytes) on a new connection and returns the status
/// line's code of the answer (0 when the connection closed without one).
fn raw_status(url: &str, request: &[u8]) -> u16 {
    let mut stream = connect(url);
    stream.write_all(request).expect("write");
    let answer = read_to_close(&mut stream);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A listener with `listener` keys (TOML, may be empty) and one route to
/// pool `p` of `instances` with `pool` keys.
fn config(listener: &str, instances: &str, pool: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{listener}\n[[routes]]\npool = \"p\"\n\
         [pools.p]\ninstances = {instances}\n{pool}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_broken_body_gets_a_client_error_and_costs_the_instances_nothing() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    // Thresholds low enough that two failures booked on an instance would
    // eject it and open its breaker.
    let proxy = serve(
        &dir,
        &config(
            "",
            &instances(&ups),
            "outlier = { consecutive_gateway_errors = 2, consecutive_5xx = 2, base_ejection_ms = 60000 }\n\
             breaker = { consecutive_failures = 2, open_ms = 60000 }",
        ),
    );
    let url = proxy.url.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            // Invalid chunked framing: a chunk size that is not hex.
            statuses.push(raw_status(
                &url,
                b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
            ));
        }
        for _ in 0..6 {
            // A client that goes away with its body incomplete.
            let mut stream = connect(&url);
            stream
                .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                .expect("write");
            stream.shutdown(std::net::Shutdown::Both).ok();
        }
        statuses
    })
    .await
    .unwrap();
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    // Both instances still take requests: nothing was ejected or opened.
    let client = client();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200, "{body}");
        served.insert(body);
    }
    assert_eq!(served.len(), 2, "{served:?}");
    let log = proxy.log();
    assert!(!log.iter().any(|l| l.contains("ejected")), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("breaker opened")),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_after_body_read_timeout_ms() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config("body_read_timeout_ms = 300", &instances(&ups), ""),
    );
    let url = proxy.url.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        [
            // Buffered for replay: 10 of the 100 declared bytes, then nothing.
            &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"[..],
            // Streamed: one chunk, then nothing.
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ]
        .map(|request| {
            let mut stream = connect(&url);
            stream.write_all(request).expect("write");
            let answer = read_to_close(&mut stream);
            answer.split(' ').nth(1).unwrap_or("").to_string()
        })
    })
    .await
    .unwrap();
    assert_eq!(statuses, ["408", "408"]);
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_idle_connections_are_closed() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config(
            "header_read_timeout_ms = 300\nidle_timeout_ms = 300",
            &instances(&ups),
            "",
        ),
    );
    let url = proxy.url.clone();
    tokio::task::spawn_blocking(move || {
        // Half a request head.
        let mut half = connect(&url);
        half.write_all(b"GET / HTTP/1.1\r\nHost:").expect("write");
        read_to_close(&mut half);
        // Nothing at all.
        let mut silent = connect(&url);
        read_to_close(&mut silent);
        // A kept-alive connection after one exchange.
        let mut kept = connect(&url);
        kept.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let answer = read_to_close(&mut kept);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_an_idle_connection_is_evicted_and_only_with_all_busy_one_is_refused() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config("max_connections = 3", &instances(&ups), ""));
    let url = proxy.url.clone();
    tokio::task::spawn_blocking(move || {
        let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let answered = |stream: &mut TcpStream| {
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).expect("an answer");
            assert_eq!(&head, b"HTTP/1.1 200");
        };
        // Three kept-alive connections, each answered once: idle now.
        let mut kept: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut stream = connect(&url);
                stream.write_all(request).expect("write");
                answered(&mut stream);
                stream
            })
            .collect();
        // A fourth evicts the one idle longest (the first) and is served.
        let mut fourth = connect(&url);
        fourth
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        assert!(read_to_close(&mut fourth).starts_with("HTTP/1.1 200"));
        // The first is closed (the rest of its answer, then the end).
        read_to_close(&mut kept[0]);
        // A connection with a request in flight is never evicted: with
        // three of them, a new connection is closed at once, unanswered.
        ups[0].hold();
        let before = ups[0].hits();
        let arrived = |n: u64| {
            let started = Instant::now();
            while ups[0].hits() < before + n {
                assert!(started.elapsed() < WAIT, "{n} requests never arrived");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        for stream in &mut kept[1..] {
            stream.write_all(request).expect("write");
        }
        arrived(2);
        // (Busy now: a third connection can only take the place of the
        // closing ones.)
        let mut third = connect(&url);
        third.write_all(request).expect("write");
        arrived(3);
        let mut refused = connect(&url);
        refused.write_all(request).ok();
        assert_eq!(read_to_close(&mut refused), "");
        // Released, the requests in flight are answered.
        ups[0].release();
        answered(&mut third);
    })
    .await
    .unwrap();
    let log = proxy.log();
    assert!(
        log.iter()
            .any(|l| l.contains("closed a connection to admit a new one"))
    );
    assert!(log.iter().any(|l| l.contains("refusing new connections")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config("max_connections_per_ip = 2", &instances(&ups), ""),
    );
    let url = proxy.url.clone();
    tokio::task::spawn_blocking(move || {
        let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let _held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = connect(&url);
                stream.write_all(request).expect("write");
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).expect("an answer");
                stream
            })
            .collect();
        let mut third = connect(&url);
        third.write_all(request).ok();
        assert_eq!(read_to_close(&mut third), "");
    })
    .await
    .unwrap();
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ups = upstreams(1);
    let path =
        switchyard_tests::process::write_config(dir.path(), &config("", &instances(&ups), ""));
    // Started with a soft limit of 256.
    let proxy = switchyard_tests::process::Switchyard::run(
        "sh",
        &[
            "-c",
            "ulimit -Sn 256 && exec \"$0\" serve --config \"$1\"",
            crate::BINARY,
            path.to_str().unwrap(),
        ],
    );
    proxy.wait_for_log("listening on http://");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a limit line");
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values[0], values[1], "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_outlasts_the_request_deadline() {
    let ups = upstreams(2);
    for u in &ups {
        u.set_status(503);
    }
    let dir = tempfile::tempdir().unwrap();
    // The policy asks to wait a minute (the most `backoff_max_ms` allows)
    // before the second retry; the request's deadline is 2 s.
    let proxy = serve(
        &dir,
        &config(
            "",
            &instances(&ups),
            &format!(
                "request_timeout_ms = 2000\nretry = {{ retries = 2, backoff_max_ms = 60000 }}\n\
                 failover = {{ kind = \"plugin\", plugin = {{ path = \"{}\", config = {{ statuses = [503], delays_ms = [0, 60000] }}, call_deadline_ms = 1000 }} }}",
                switchyard_tests::fixtures::RETRY_SCHEDULE
            ),
        ),
    );
    // The first retry is made at once; the one that would wait past the
    // deadline is not: the client gets the last answer.
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(ups[0].hits() + ups[1].hits(), 2);
    proxy.wait_for_log("the wait would pass the request's deadline");
}

#[test]
fn waits_beyond_their_maxima_are_refused_naming_the_key() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    for (listener, pool, named) in [
        (
            "",
            "retry = { backoff_base_ms = 25, backoff_max_ms = 3600000 }",
            "pools.p.retry.backoff_max_ms",
        ),
        (
            "",
            "request_timeout_ms = 86400000",
            "pools.p.request_timeout_ms",
        ),
        (
            "",
            "bulkhead = { max_concurrent = 10, queue_timeout_ms = 99999999 }",
            "pools.p.bulkhead.queue_timeout_ms",
        ),
        (
            "header_read_timeout_ms = 0",
            "",
            "listeners[0].header_read_timeout_ms",
        ),
    ] {
        let path = switchyard_tests::process::write_config(
            dir.path(),
            &config(listener, &instances(&ups), pool),
        );
        let output = std::process::Command::new(crate::BINARY)
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{named}: accepted");
        assert!(text.contains(named), "{named}: {text}");
        assert!(text.contains("out of range"), "{named}: {text}");
    }
}

/// The status and the `x-upstream` and `x-upstream-path` headers of the
/// answer to `request`, sent raw.
fn raw_answer(url: &str, request: &str) -> (u16, String, String) {
    let mut stream = connect(url);
    stream.write_all(request.as_bytes()).expect("write");
    let answer = read_to_close(&mut stream);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    (status, header("x-upstream:"), header("x-upstream-path:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_routing_and_forwarding() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/api\" }}\npool = \"api\"\n\
         [[routes]]\npool = \"admin\"\n\
         [pools.api]\ninstances = [{{ url = \"{}\" }}]\n\
         [pools.admin]\ninstances = [{{ url = \"{}\" }}]\n",
        ups[0].url(),
        ups[1].url()
    );
    let proxy = serve(&dir, &toml);
    let url = proxy.url.clone();
    let answers = tokio::task::spawn_blocking(move || {
        [
            "GET /api/../admin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /api/%2e%2E/admin?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET //api//v1/./items HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /api/..%2fadmin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /api/a%00b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /api/%%330 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /api/v1 HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /api/v1 HTTP/1.0\r\n\r\n",
        ]
        .map(|request| raw_answer(&url, request))
    })
    .await
    .unwrap();
    let expect =
        |status: u16, upstream: &str, path: &str| (status, upstream.to_string(), path.to_string());
    assert_eq!(
        answers,
        [
            expect(200, "u1", "/admin"),
            expect(200, "u1", "/admin?x=1"),
            expect(200, "u0", "/api/v1/items"),
            // An escaped slash, a NUL, a `%` that starts no escape,
            // HTTP/1.1 without Host: 400.
            expect(400, "", ""),
            expect(400, "", ""),
            expect(400, "", ""),
            expect(400, "", ""),
            // HTTP/1.0 needs no Host.
            expect(200, "u0", "/api/v1"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_passes_again_ends_an_open_breaker_early() {
    let ups = upstreams(2);
    for up in &ups {
        up.set_body("alive");
    }
    let dir = tempfile::tempdir().unwrap();
    // The breaker would stay open a minute; checks run every 200 ms and
    // pass on any status up to 503 whose body says "alive", so requests and
    // checks can be made to fail one at a time.
    let proxy = serve(
        &dir,
        &config(
            "",
            &instances(&ups),
            "strategy = { kind = \"round-robin\" }\n\
             breaker = { consecutive_failures = 2, open_ms = 60000 }\n\
             health = { interval_ms = 200, timeout_ms = 150, rise = 1, fall = 1, \
                        expect_status = [200, 503], body_contains = \"alive\" }",
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    // u1 fails requests while its checks still pass: its breaker opens
    // (were its checks failing too, u1 could leave the rotation first).
    ups[1].set_status(503);
    let started = Instant::now();
    while !proxy.log().iter().any(|l| l.contains("breaker open")) {
        get(&client, &url).await;
        assert!(started.elapsed() < WAIT, "the breaker never opened");
    }
    // Then its checks fail while the breaker is open.
    ups[1].set_body("dead");
    proxy.wait_for_log("unhealthy after 1 failed checks");
    // It recovers: the next passing check sends it probe requests, which
    // close the breaker, long before its open time is over.
    ups[1].set_status(200);
    ups[1].set_body("alive");
    proxy.wait_for_log("an active health check passes again");
    let before = ups[1].hits();
    let started = Instant::now();
    while ups[1].hits() <= before + 3 {
        assert_eq!(get(&client, &url).await.0, 200);
        assert!(started.elapsed() < WAIT, "u1 got no traffic back");
    }
    proxy.wait_for_log("breaker closed");
}

/// A pool `p` of `ups` balanced by the hostile balancer in `mode`.
fn hostile(mode: &str, ups: &[switchyard_tests::upstream::Upstream]) -> String {
    config(
        "",
        &instances(ups),
        &format!(
            "strategy = {{ kind = \"plugin\", plugin = {{ path = \"{}\", config = {{ mode = \"{mode}\" }}, call_deadline_ms = 1000 }} }}",
            switchyard_tests::fixtures::HOSTILE_BALANCER
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_plugin_is_bounded_and_its_dropped_output_counted() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let toml = hostile("chatty", &ups) + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let proxy = serve(&dir, &toml);
    let client = client();
    let started = Instant::now();
    // 40 picks write 400 lines of 1 KiB.
    for _ in 0..40 {
        assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    }
    let seconds = started.elapsed().as_secs() + 2;
    let logged = proxy
        .log()
        .iter()
        .filter(|l| l.contains("stream=\"stdout\""))
        .count() as u64;
    assert!(
        logged <= 20 * seconds,
        "{logged} lines in {seconds} s: over 20 a second"
    );
    let (_, status) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", proxy.admin_url()),
        None,
    )
    .await;
    let plugin = &status["plugins"][0];
    assert!(
        plugin["output_dropped_lines"].as_u64().unwrap() > 0,
        "{plugin}"
    );
    assert!(
        plugin["output_dropped_bytes"].as_u64().unwrap() > 0,
        "{plugin}"
    );
    assert_eq!(plugin["faults"], 0, "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_plugin_faults_and_the_fault_names_its_pool() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &hostile("flood", &ups));
    // 100 KiB of output in one pick: a fault; the built-in serves.
    assert_eq!(get(&client(), &format!("{}/", proxy.url)).await.0, 200);
    let fault = proxy.wait_for_log("kind=PluginFault");
    assert!(fault.contains("bytes of output in one call"), "{fault}");
    assert!(fault.contains("pool=p "), "{fault}");
}

#[test]
fn a_panic_in_configure_is_named_in_the_refusal() {
    let output = std::process::Command::new(crate::BINARY)
        .args([
            "plugin",
            "check",
            switchyard_tests::fixtures::HOSTILE_BALANCER,
            "--config",
            r#"{"mode": "refuse-panic"}"#,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let refusal = text
        .lines()
        .find(|l| l.contains("wasm trap"))
        .unwrap_or_else(|| panic!("no refusal in {text}"));
    assert!(refusal.contains("bad config value 42"), "{refusal}");
}

#[test]
fn runtime_worker_threads_sizes_the_runtime() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let toml = config("", &instances(&ups), "") + "[runtime]\nworker_threads = 3\n";
    let proxy = serve(&dir, &toml);
    // Tokio names its workers `tokio-rt-worker` (each thread names itself
    // once it runs, so the count is polled); nothing here uses its blocking
    // pool (no request was sent).
    let workers = || {
        std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count()
    };
    let started = Instant::now();
    while workers() != 3 && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(workers(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_slow_clients_are_evicted_and_a_normal_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let ups = upstreams(1);
    // Slow clients would hold their places for 10 minutes.
    let path = switchyard_tests::process::write_config(
        dir.path(),
        &config("header_read_timeout_ms = 600000", &instances(&ups), ""),
    );
    // Under a 1024 file limit, soft and hard (a usual default): 384 places.
    let mut command = std::process::Command::new("prlimit");
    command
        .args([
            "--nofile=1024:1024",
            "--",
            crate::BINARY,
            "serve",
            "--config",
        ])
        .arg(&path);
    let proxy = switchyard_tests::process::Switchyard::start(command).listening();
    let addr = proxy.url.trim_start_matches("http://").to_string();
    // One client opens 1,100 connections, each with half a request head.
    let slow: Vec<TcpStream> = (0..1_100)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            stream
        })
        .collect();
    // A normal client is served.
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!((status, body.as_str()), (200, "u0"));
    let line = proxy.wait_for_log("closed a connection to admit a new one");
    assert!(line.contains("max_connections=384"), "{line}");
    drop(slow);
}

/// One answer read from a kept-alive connection: its head (lower-cased)
/// and its body, by its `Content-Length`.
fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut read = Vec::new();
    let mut byte = [0u8; 1];
    while !read.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("an answer");
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&read));
        read.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&read).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("the answer's body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_refused_request_s_late_body_is_read_and_its_connection_serves_the_next() {
    let upstream = switchyard_tests::upstream::Upstream::start("u0");
    let (key, digest) = crate::auth::new_key();
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\nfilters = [\"keys\"]\n\
             [filters.keys]\nkind = \"api-key\"\nprincipals = [{{ id = \"ann\", keys = [\"{digest}\"] }}]\n\
             [pools.p]\ninstances = [{{ url = \"{}\" }}]\n",
            upstream.url()
        ),
    );
    let mut stream = connect(&proxy.url);
    // A request without a key, its body sent after its head (as clients
    // that write them apart do): the filter refuses it at its head.
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"hello").unwrap();
    let (head, _) = read_answer(&mut stream);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // The body was read, not taken for the next request's head: the
    // next request on the connection is served.
    stream
        .write_all(
            format!("GET /orders HTTP/1.1\r\nHost: a\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let (head, body) = read_answer(&mut stream);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "u0");
    assert_eq!(upstream.hits(), 1);
}
