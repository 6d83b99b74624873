//! Fan-out routes: one request to several sources at once, one fused answer.
//!
//! The request body is buffered (up to `max_request_body_bytes`, else 413)
//! since every source gets a copy. A fresh cached answer is served at once.
//! Otherwise each source gets one attempt — a pool source on the instance its
//! balancer picks, an instance source on that instance — within
//! `source_timeout_ms` for the complete answer (bounded by
//! `max_answer_bytes`); the whole fan-out ends at `timeout_ms`, and sources
//! still pending then count as timed out. A resolver that is settled early
//! (see [`Builtin::enough`]) ends it sooner and the pending requests are
//! cancelled, unless `early_exit = false`. Each attempt is booked like any
//! other (balancer, outlier detection, breaker; a source that timed out as
//! the timeout it is, so the instance sits out `fail_timeout_ms`), and
//! holds a slot of its pool's bulkhead until its answer is read: a source
//! shed by it fails with the bulkhead's reason (`pool … is at capacity:
//! …`). Fan-out attempts are not retried: a fan-out already asks several
//! sources, and a slow one is what the resolver and `timeout_ms` are for.
//!
//! [`Builtin::enough`]: crate::fusion::Builtin::enough

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full, Limited};

use super::body::ProxyBody;
use super::call::AttemptError;
use super::client::{self, ListenerRules, Received};
use super::forward::Inbound;
use super::pool::Pool;
use super::{ProxyError, StartError, headers};
use crate::balance::{Affinity, EndpointId};
use crate::config::{FanOutConfig, ResolverConfig};
use crate::failover::Admission;
use crate::fusion::{
    Answer, Builtin, CacheLookup, FusionCache, FusionError, Judge, Judging, Outcome, Quality,
    Resolve, Source, UpstreamResponse, judge,
};
use crate::plugin::{Limits, PluginHost, PluginStats, WasmResolver};
use crate::policy::{RequestContext, WithFallback};

/// Where a source's request goes.
enum Target {
    /// The instance the pool's balancer picks.
    Pool(Arc<Pool>),
    /// One instance of a pool.
    Instance(Arc<Pool>, EndpointId),
}

/// The request being fanned out, prepared once for every source.
struct Call<'a> {
    parts: &'a http::request::Parts,
    path_and_query: &'a PathAndQuery,
    body: &'a Bytes,
    host: &'a str,
    peer: SocketAddr,
}

impl Call<'_> {
    /// `pool`'s ranking for this request (no session affinity).
    fn rank(&self, pool: &Pool) -> crate::balance::Ranking {
        super::forward::rank(
            pool,
            self.parts,
            self.host,
            self.path_and_query,
            self.peer,
            &Affinity::default(),
        )
    }
}

/// A fan-out route at run time.
pub struct FanOut {
    index: usize,
    sources: Vec<Source>,
    targets: Vec<Target>,
    /// Instance mode: the pool and how many of its instances to ask.
    instances: Option<(Arc<Pool>, usize)>,
    /// The configured resolver, with a built-in standing by for a plugin.
    resolver: WithFallback<dyn Resolve>,
    /// The resolver plugin's counters, when it is one.
    plugin_stats: Option<Arc<PluginStats>>,
    early_exit: bool,
    schema: Option<jsonschema::Validator>,
    cache: Option<Arc<FusionCache>>,
    quality: Arc<Quality>,
    timeout: Duration,
    source_timeout: Duration,
    max_request_body: u64,
    max_answer: usize,
    accept_status: RangeInclusive<u16>,
}

impl FanOut {
    /// Builds route number `index` from `config` (validated) over `pools`,
    /// loading a resolver plugin in `host`. `previous`, the same route as
    /// built before a change, hands on its cache, and its sources' quality
    /// when the sources are the same (in instance mode they follow the
    /// pool's membership).
    ///
    /// # Errors
    /// [`StartError::Plugin`] when the resolver plugin is refused.
    pub fn build(
        index: usize,
        config: &FanOutConfig,
        pools: &std::collections::BTreeMap<String, Arc<Pool>>,
        host: &PluginHost,
        previous: Option<&FanOut>,
    ) -> Result<Self, StartError> {
        let (sources, targets, instances) = match &config.pool {
            Some(name) => {
                let pool = pools
                    .get(name)
                    .cloned()
                    .ok_or_else(|| StartError::Route(format!("unknown pool `{name}`")))?;
                let sources = pool
                    .members()
                    .as_slice()
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Source {
                        name: format!("{name}/{}", e.authority),
                        priority: i as u32,
                        weight: f64::from(e.weight()),
                    })
                    .collect();
                let targets = pool
                    .members()
                    .as_slice()
                    .iter()
                    .map(|e| Target::Instance(Arc::clone(&pool), e.id))
                    .collect();
                let count = config.count.map_or(pool.members().len(), |c| c as usize);
                (sources, targets, Some((pool, count)))
            }
            None => {
                let mut sources = Vec::with_capacity(config.sources.len());
                let mut targets = Vec::with_capacity(config.sources.len());
                for (i, s) in config.sources.iter().enumerate() {
                    let pool = pools
                        .get(&s.pool)
                        .cloned()
                        .ok_or_else(|| StartError::Route(format!("unknown pool `{}`", s.pool)))?;
                    sources.push(Source {
                        name: s.pool.clone(),
                        priority: s.priority.unwrap_or(i as u32),
                        weight: s.weight,
                    });
                    targets.push(Target::Pool(pool));
                }
                (sources, targets, None)
            }
        };
        let key = format!("routes[{index}].fan_out.resolver");
        let accept_status = config.accept_status[0]..=config.accept_status[1];
        let (resolver, plugin_stats) = match &config.resolver {
            ResolverConfig::Plugin(p) => {
                let (config_json, limits) = (p.plugin.config_json(), Limits::of(&p.plugin));
                let plugin = WasmResolver::load(host, &p.plugin.path, config_json, limits)
                    .map_err(|error| StartError::Plugin {
                        key: key.clone(),
                        error,
                    })?
                    .accepting(accept_status.clone());
                let fallback = Builtin::new(&p.fallback).ok_or_else(|| {
                    StartError::Route(format!("{key}.fallback: not a built-in resolver"))
                })?;
                let stats = plugin.stats();
                stats.serve(format!("route {index}"));
                let plugin: Arc<dyn Resolve> = Arc::new(plugin);
                (
                    WithFallback::new(plugin, Some(Box::new(fallback) as Box<dyn Resolve>)),
                    Some(stats),
                )
            }
            other => {
                let builtin = Builtin::new(other)
                    .ok_or_else(|| StartError::Route(format!("{key}: not a built-in resolver")))?;
                (
                    WithFallback::new(Arc::new(builtin) as Arc<dyn Resolve>, None),
                    None,
                )
            }
        };
        // Validated when the config was loaded; re-read here.
        let schema = match &config.schema_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| StartError::Route(format!("schema `{}`: {e}", path.display())))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| StartError::Route(format!("schema `{}`: {e}", path.display())))?;
                Some(
                    jsonschema::validator_for(&value).map_err(|e| {
                        StartError::Route(format!("schema `{}`: {e}", path.display()))
                    })?,
                )
            }
            None => None,
        };
        let quality = previous
            .filter(|p| {
                p.sources.len() == sources.len()
                    && p.sources
                        .iter()
                        .zip(&sources)
                        .all(|(a, b)| a.name == b.name)
            })
            .map_or_else(
                || Arc::new(Quality::new(sources.len())),
                |p| Arc::clone(&p.quality),
            );
        let cache = config.cache.as_ref().map(|c| {
            previous
                .and_then(|p| p.cache.clone())
                .unwrap_or_else(|| Arc::new(FusionCache::new(c)))
        });
        Ok(Self {
            index,
            quality,
            sources,
            targets,
            instances,
            resolver,
            plugin_stats,
            early_exit: config.early_exit,
            schema,
            cache,
            timeout: Duration::from_millis(config.timeout_ms),
            source_timeout: Duration::from_millis(config.source_timeout_ms),
            max_request_body: config.max_request_body_bytes,
            max_answer: usize::try_from(config.max_answer_bytes).unwrap_or(usize::MAX),
            accept_status,
        })
    }

    /// The sources, in configured order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Each source's learned quality.
    pub fn quality(&self) -> &Quality {
        &self.quality
    }

    /// The resolver plugin's counters, when the resolver is a plugin.
    pub fn plugin_stats(&self) -> Option<Arc<PluginStats>> {
        self.plugin_stats.clone()
    }

    /// The cache, when configured.
    pub fn cache(&self) -> Option<&FusionCache> {
        self.cache.as_deref()
    }

    /// Serves one request: buffer, cache, fan out, fuse.
    pub(crate) async fn serve(
        &self,
        request: Inbound<'_>,
        body: Received,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Inbound {
            mut parts,
            host,
            peer,
            authority,
            limits,
            tls,
        } = request;
        let body = self.read_body(body, &parts.headers, limits).await?;
        headers::prepare_request(&mut parts.headers, peer.ip(), authority, tls);
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut stale = None;
        let key = self.cache.as_ref().map(|cache| {
            cache.key(
                self.index,
                &parts.method,
                path_and_query.as_str(),
                &parts.headers,
                &body,
            )
        });
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            match cache.lookup(key) {
                CacheLookup::Hit(response) => return Ok(response.map(ProxyBody::Local)),
                CacheLookup::Miss { stale: s } => stale = s,
            }
        }
        let call = Call {
            parts: &parts,
            path_and_query: &path_and_query,
            body: &body,
            host,
            peer,
        };
        let (asked, admissions) = self.select(&call);
        let answers = self.collect(&call, &asked, admissions).await;
        let facts = RequestContext {
            method: &parts.method,
            authority: host,
            path: path_and_query.as_str(),
            headers: &parts.headers,
            client_addr: peer,
        };
        match self.fuse(&facts, &asked, answers) {
            Ok(fused) => {
                let body = fused.body.clone();
                let mut response = fused.into_response(&self.sources);
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    cache.store(key, response.status(), response.headers(), &body);
                    response
                        .headers_mut()
                        .insert("x-switchyard-cache", HeaderValue::from_static("miss"));
                }
                Ok(response.map(ProxyBody::Local))
            }
            Err(error) => match (stale, &self.cache) {
                (Some(response), Some(cache)) => {
                    cache.served_stale();
                    tracing::info!(route = self.index, %error, "fusion failed; serving the cached answer (stale-if-error)");
                    Ok(response.map(ProxyBody::Local))
                }
                _ => Err(ProxyError::Fusion {
                    route: self.index,
                    error,
                }),
            },
        }
    }

    /// The whole request body, or 413 past `max_request_body_bytes`.
    async fn read_body(
        &self,
        body: Received,
        headers: &HeaderMap,
        limits: &ListenerRules,
    ) -> Result<Bytes, ProxyError> {
        if body.is_end_stream() {
            return Ok(Bytes::new());
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_request_body) {
            return Err(ProxyError::PayloadTooLarge {
                limit_bytes: self.max_request_body,
            });
        }
        client::read_whole(body, limits, self.max_request_body).await
    }

    /// The sources to ask: every source, or in instance mode the first
    /// `count` acceptable instances of the pool's ranking, each with its
    /// breaker's admission (held until its attempt is recorded or dropped).
    fn select(&self, call: &Call<'_>) -> (Vec<usize>, Vec<Admission>) {
        let Some((pool, count)) = &self.instances else {
            return ((0..self.sources.len()).collect(), Vec::new());
        };
        let ranking = call.rank(pool);
        let mut asked: Vec<EndpointId> = Vec::with_capacity(*count);
        let mut admissions = Vec::with_capacity(*count);
        while asked.len() < *count {
            match pool.next(&ranking, &asked, None) {
                Some((id, admission)) => {
                    asked.push(id);
                    admissions.push(admission);
                }
                None => break,
            }
        }
        // Source i is the pool's instance at position i in instance mode.
        (
            asked
                .into_iter()
                .filter_map(|id| pool.members().position(id))
                .collect(),
            admissions,
        )
    }

    /// Asks every source of `asked` at once; returns the judged answers in
    /// arrival order — every asked source's unless the resolver was settled
    /// early (then the pending requests are cancelled).
    async fn collect(
        &self,
        call: &Call<'_>,
        asked: &[usize],
        admissions: Vec<Admission>,
    ) -> Vec<Answer> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let primary = self.resolver.primary();
        let judge_with = self.judge(primary.judging());
        let mut admissions = admissions.into_iter();
        let mut pending: FuturesUnordered<_> = asked
            .iter()
            .map(|&source| self.ask(source, admissions.next(), call))
            .collect();
        let mut answers: Vec<Answer> = Vec::with_capacity(asked.len());
        let mut expired = false;
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    Some((source, latency_us, outcome)) => {
                        answers.push(judge(&judge_with, source, latency_us, outcome));
                        if self.early_exit
                            && primary.settled(&self.sources, asked, &answers)
                        {
                            break;
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    expired = true;
                    break;
                }
            }
        }
        drop(pending);
        if expired {
            let late: Vec<usize> = asked
                .iter()
                .copied()
                .filter(|s| !answers.iter().any(|a| a.source == *s))
                .collect();
            let waited_us = self.timeout.as_micros() as u64;
            answers.extend(
                late.into_iter()
                    .map(|s| judge(&judge_with, s, waited_us, Outcome::Timeout)),
            );
        }
        answers
    }

    /// What the route checks in an answer for a resolver that needs
    /// `judging` (a plugin: status and schema only).
    fn judge(&self, judging: Judging) -> Judge<'_> {
        Judge {
            accept_status: self.accept_status.clone(),
            needs_json: judging.json,
            schema: self.schema.as_ref(),
            vote: judging.vote,
        }
    }

    /// One attempt on one source: (source, latency µs, outcome). An
    /// instance source comes with the admission [`select`](Self::select)
    /// took; a pool source chooses its instance here.
    async fn ask(
        &self,
        source: usize,
        admission: Option<Admission>,
        call: &Call<'_>,
    ) -> (usize, u64, Outcome) {
        // The source's pool's bulkhead bounds what the fan-out sends it,
        // as it bounds the pool's own route; the slot is held until the
        // answer is read.
        let (Target::Instance(pool, _) | Target::Pool(pool)) = &self.targets[source];
        let _slot = match pool.enter_bulkhead().await {
            Ok(slot) => slot,
            Err(shed) => return (source, 0, Outcome::Error(shed.to_string())),
        };
        let (pool, id, admission) = match &self.targets[source] {
            Target::Instance(pool, id) => (pool, *id, admission.unwrap_or_default()),
            Target::Pool(pool) => {
                let ranking = call.rank(pool);
                match pool.next(&ranking, &[], None) {
                    Some((id, admission)) => (pool, id, admission),
                    None => {
                        return (
                            source,
                            0,
                            Outcome::Error(format!(
                                "pool `{}` has no instance available",
                                pool.name()
                            )),
                        );
                    }
                }
            }
        };
        let Some(endpoint) = pool.members().get(id) else {
            let gone = format!("instance {id} left pool `{}`", pool.name());
            return (source, 0, Outcome::Error(gone));
        };
        let build = |_again| {
            let mut request = Request::new(Either::Right(Full::new(call.body.clone())));
            *request.method_mut() = call.parts.method.clone();
            *request.uri_mut() = Uri::from(call.path_and_query.clone());
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = call.parts.headers.clone();
            request
        };
        // The body is buffered: a request the pool may repeat can be sent again.
        let resendable = pool.failover().retry().method_retryable(&call.parts.method);
        let started = Instant::now();
        // The answer's head within the source's timeout, booked as any
        // attempt is; then its body within what is left of it (a body that
        // does not come in time is this source's timeout, not booked again).
        let sent = pool
            .send(endpoint, self.source_timeout, resendable, build)
            .await;
        pool.book(endpoint, admission, &sent);
        let outcome = match sent.result {
            Ok((response, _in_flight)) => {
                let (mut head, incoming) = response.into_parts();
                let left = self.source_timeout.saturating_sub(started.elapsed());
                let body = Limited::new(incoming, self.max_answer).collect();
                match tokio::time::timeout(left, body).await {
                    Err(_elapsed) => Outcome::Timeout,
                    Ok(Ok(collected)) => {
                        headers::strip_hop_by_hop(&mut head.headers);
                        Outcome::Response(UpstreamResponse {
                            status: head.status,
                            headers: head.headers,
                            body: collected.to_bytes(),
                        })
                    }
                    Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Outcome::Error(
                        format!("answer over max_answer_bytes ({})", self.max_answer),
                    ),
                    Ok(Err(e)) => Outcome::Error(format!("reading the answer: {e}")),
                }
            }
            Err(AttemptError::TimedOut(_)) => Outcome::Timeout,
            Err(error) => Outcome::Error(error.reason(endpoint)),
        };
        (source, started.elapsed().as_micros() as u64, outcome)
    }

    /// Fuses the answers with the resolver; a built-in taking over from a
    /// faulting plugin judges the answers anew for what it needs.
    fn fuse(
        &self,
        request: &RequestContext<'_>,
        asked: &[usize],
        answers: Vec<Answer>,
    ) -> Result<crate::fusion::Fused, FusionError> {
        let judged_for = self.resolver.primary().judging();
        let fused = self.resolver.decide(|resolver| {
            let judging = resolver.judging();
            if judging == judged_for {
                return resolver.fuse(request, &self.sources, asked, &answers, &self.quality);
            }
            let judge_with = self.judge(judging);
            let rejudged: Vec<Answer> = answers
                .iter()
                .map(|a| judge(&judge_with, a.source, a.latency_us, a.outcome.clone()))
                .collect();
            resolver.fuse(request, &self.sources, asked, &rejudged, &self.quality)
        });
        // Built-ins never fault; were every resolver to, nothing answered.
        fused.unwrap_or_else(|| Err(FusionError::no_answer(&self.sources, &answers)))
    }
}
