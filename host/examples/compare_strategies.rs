//! Which strategy when? The built-in strategies on one simulated, uneven pool.
//!
//! Run: `cargo run --release -p switchyard --example compare_strategies`
//!
//! Ten instances: six fast (1 ms), two slow (8 ms) and two erratic (1 ms,
//! but 1 request in 10 takes 60 ms). 64 clients send requests back to back;
//! each strategy serves the same 20,000 requests and the latency each client
//! saw is reported as percentiles. The simulation runs on Tokio's paused
//! clock, so it takes seconds of real time and its numbers are the model's,
//! not the machine's: instance service times, with queueing when a strategy
//! piles requests onto one instance (each instance serves 4 at a time).
//!
//! What it shows, in the model's terms (BENCHMARKS.md has a run):
//! - order-based strategies (round robin, weighted, random, plain consistent
//!   hash) send the slow and erratic instances their full share (40% here),
//!   and queues build behind them: p90 and p99 are tens of milliseconds;
//! - load-aware ones (least-connections, consistent hash with bounded loads)
//!   see the queues and route around them: the tail shrinks several-fold;
//! - latency-aware `fastest-response` learns the slow instances and avoids
//!   them, but an erratic instance looks fast most of the time, so its tail
//!   stays above a full least-connections scan;
//! - `resource-aware` needs load reports, which this model does not send: it
//!   behaves as weighted random.
//!
//! Tokio's timer has 1 ms resolution, so latencies are whole milliseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use switchyard::balance::{self, Endpoint, Ranking, RequestContext};
use switchyard::config::{
    ConsistentHashConfig, FastestResponseConfig, HashAlgorithm, HashKey, LeastConnectionsConfig,
    NoKeys, ResourceAwareConfig, StrategyConfig,
};
use tokio::sync::Semaphore;

const CLIENTS: usize = 64;
const REQUESTS: usize = 20_000;
/// Requests an instance serves at once; more wait in its queue.
const CONCURRENCY: usize = 4;

/// An instance's service time for one request.
#[derive(Clone, Copy)]
enum Profile {
    Fast,
    Slow,
    Erratic,
}

impl Profile {
    fn service_time(self) -> Duration {
        match self {
            Profile::Fast => Duration::from_micros(900 + fastrand::u64(..200)),
            Profile::Slow => Duration::from_micros(7_500 + fastrand::u64(..1_000)),
            Profile::Erratic if fastrand::u8(..10) == 0 => Duration::from_millis(60),
            Profile::Erratic => Duration::from_micros(900 + fastrand::u64(..200)),
        }
    }
}

const PROFILES: [Profile; 10] = [
    Profile::Fast,
    Profile::Slow,
    Profile::Fast,
    Profile::Erratic,
    Profile::Fast,
    Profile::Fast,
    Profile::Slow,
    Profile::Fast,
    Profile::Erratic,
    Profile::Fast,
];

fn strategies() -> Vec<(&'static str, StrategyConfig)> {
    vec![
        ("round-robin", StrategyConfig::RoundRobin(NoKeys {})),
        (
            "weighted-round-robin",
            StrategyConfig::WeightedRoundRobin(NoKeys {}),
        ),
        ("random", StrategyConfig::Random(NoKeys {})),
        (
            "least-connections (p2c)",
            StrategyConfig::LeastConnections(LeastConnectionsConfig::default()),
        ),
        (
            "least-connections (scan)",
            StrategyConfig::LeastConnections(LeastConnectionsConfig { choice_count: 10 }),
        ),
        (
            "fastest-response",
            StrategyConfig::FastestResponse(FastestResponseConfig::default()),
        ),
        (
            "consistent-hash (maglev)",
            StrategyConfig::ConsistentHash(ConsistentHashConfig {
                key: HashKey::Header("x-user".into()),
                algorithm: HashAlgorithm::Maglev,
                bounded_load_factor: None,
                vnodes_per_weight: 160,
                table_size: 65_537,
            }),
        ),
        (
            "consistent-hash (bounded 1.25)",
            StrategyConfig::ConsistentHash(ConsistentHashConfig {
                key: HashKey::Header("x-user".into()),
                algorithm: HashAlgorithm::Ring,
                bounded_load_factor: Some(1.25),
                vnodes_per_weight: 160,
                table_size: 65_537,
            }),
        ),
        (
            "resource-aware",
            StrategyConfig::ResourceAware(ResourceAwareConfig::default()),
        ),
    ]
}

/// Runs `config` over a fresh pool; returns every request's latency and each instance's share.
async fn simulate(config: &StrategyConfig) -> (Vec<Duration>, Vec<usize>) {
    let endpoints: Vec<Arc<Endpoint>> = (0..PROFILES.len())
        .map(|i| {
            Arc::new(Endpoint::new(
                i as u32,
                format!("http://10.0.0.{i}:80"),
                format!("10.0.0.{i}:80").parse().expect("authority"),
                1,
                Vec::new(),
            ))
        })
        .collect();
    let strategy: Arc<dyn balance::Strategy> =
        Arc::from(balance::build(config, &endpoints).expect("only built-ins are simulated"));
    let slots: Arc<Vec<Semaphore>> = Arc::new(
        (0..PROFILES.len())
            .map(|_| Semaphore::new(CONCURRENCY))
            .collect(),
    );
    let shares: Arc<Vec<std::sync::atomic::AtomicUsize>> =
        Arc::new((0..PROFILES.len()).map(|_| Default::default()).collect());
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (strategy, endpoints, slots, shares) = (
            Arc::clone(&strategy),
            endpoints.clone(),
            Arc::clone(&slots),
            Arc::clone(&shares),
        );
        clients.spawn(async move {
            let method = Method::GET;
            let addr: SocketAddr = ([10, 1, 0, client as u8], 40_000).into();
            let mut latencies = Vec::new();
            for n in 0..REQUESTS / CLIENTS {
                let mut headers = HeaderMap::new();
                let user = format!("user-{}", (client * 7919 + n) % 500);
                headers.insert("x-user", HeaderValue::from_str(&user).expect("header"));
                let request = RequestContext {
                    method: &method,
                    authority: "sim",
                    path: "/",
                    headers: &headers,
                    client_addr: addr,
                };
                let mut ranking = Ranking::new();
                let _ = strategy.rank(&request, &endpoints, &mut ranking);
                let id = ranking.first().copied().unwrap_or(0) as usize;
                shares[id].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let start = tokio::time::Instant::now();
                let in_flight = endpoints[id].start_request();
                let permit = slots[id].acquire().await.expect("semaphore");
                tokio::time::sleep(PROFILES[id].service_time()).await;
                drop(permit);
                drop(in_flight);
                let latency = start.elapsed();
                endpoints[id].record(true, latency.as_micros() as u64);
                strategy.observe(id as u32, true, latency.as_micros() as u64);
                latencies.push(latency);
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(REQUESTS);
    while let Some(done) = clients.join_next().await {
        all.extend(done.expect("client"));
    }
    let shares = shares
        .iter()
        .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    (all, shares)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1_000.0
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!(
        "{CLIENTS} clients, {REQUESTS} requests; 6 fast (1 ms), 2 slow (8 ms), 2 erratic (10% at 60 ms)"
    );
    println!("instances 1 and 6 are slow, 3 and 8 erratic; latency in ms (simulated clock)\n");
    println!(
        "{:<32} {:>7} {:>7} {:>7} {:>7}   share of slow + erratic",
        "strategy", "p50", "p90", "p99", "max"
    );
    for (name, config) in strategies() {
        let (mut latencies, shares) = simulate(&config).await;
        latencies.sort_unstable();
        let slow: usize = [1, 3, 6, 8].iter().map(|i| shares[*i]).sum();
        println!(
            "{name:<32} {:>7.2} {:>7.2} {:>7.2} {:>7.2}   {:>5.1}%",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            100.0 * slow as f64 / REQUESTS as f64
        );
    }
}
