//! A route's filter chain: the built-in filters of `[filters.NAME]`
//! ([`crate::config::FilterConfig`]), compiled once per router and applied
//! to each request before its target is asked ([`Chain::on_request`]) and
//! to each answer on its way back ([`Chain::on_response`]).
//!
//! A route without filters has an empty chain: [`Chain::is_empty`] is the
//! one check its requests pay.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header};
use http_body_util::Full;
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use regex::Regex;

use super::auth::{ApiKeys, Check, JwtIssuers, Principal};
use super::authorize::{Authorizer, Facts, Scope, ScopedRules};
use super::compress::Compress;
use super::forward_auth::ForwardAuth;
use super::rate_limit::{ConcurrencySlots, RateLimits, ScopedQuotas};
use crate::config::{
    AuthMode, CorsConfig, FilterConfig, FilterFailureMode, HeaderRules, IpFilterConfig,
    RedirectConfig, RespondConfig, TemplatePart, Variable, origin_matches, parse_cidr,
    parse_template,
};
use crate::events::{EventBus, EventKind, HealthEvent, Severity};
use crate::mcp::{Guards, McpGuard};
use crate::metrics::PrincipalCounts;
use crate::plugin::{Fault, FilterRequest, FilterVerdict, MadeResponse, WasmFilter};
use crate::policy::RequestContext;
use crate::proxy::{
    Decode, Encoding, ListenerRules, ProxyBody, ProxyError, ReadAhead, Received, Reporting,
    StaticResponse, read_ahead,
};
use crate::tls::ClientIdentity;

/// A route's filters, in the route's order.
#[derive(Default)]
pub struct Chain {
    /// What the request steps do, in order, each with the counter of the
    /// requests it answered itself and its filter's name.
    request: Vec<(RequestStep, Counter, String)>,
    /// What the response steps do, in order.
    response: Vec<ResponseStep>,
    /// The smallest `body-limit` of the chain, bytes.
    body_limit: Option<u64>,
    /// The codings a `decompress` step decodes, and its bound on a
    /// decoded body, bytes.
    decompress: Option<(Vec<Encoding>, u64)>,
    /// The filters' names, as the route lists them.
    names: Vec<String>,
    /// What the steps read of a request, so that a request copies only
    /// that.
    needs: Needs,
    /// Where refusals are published (a `filter_refused` event per route
    /// and filter, merged by the bus's cooldown); set by [`Chain::build`].
    events: Option<Arc<EventBus>>,
}

/// What a chain's steps read of a request beyond its head as it goes.
#[derive(Default, Clone, Copy)]
struct Needs {
    /// The path as routed, for request header templates.
    request_path: bool,
    /// The path as routed, for response header templates.
    response_path: bool,
    /// Steps that act on every answer (headers, compression, request id).
    every_answer: bool,
    /// A CORS step (acts on answers to requests with `Origin`).
    cors: bool,
    /// A compress step (reads `Accept-Encoding`).
    compress: bool,
    /// The most of a request body's first bytes a plugin step reads.
    request_body: usize,
}

/// One response step.
enum ResponseStep {
    Headers(HeaderEdit),
    /// Sends the request's id back in this header.
    RequestId(HeaderName),
    Cors(Arc<Cors>),
    Compress(Compress),
    /// A plugin that asked to see answers.
    Plugin(Arc<PluginStep>),
}

/// A filter plugin's place in a chain.
struct PluginStep {
    filter: Arc<WasmFilter>,
    /// The filter's name.
    name: Arc<str>,
    /// `failure_mode = "closed"`: a fault refuses the request.
    closed: bool,
    /// Whether its view of the request is kept: it sees answers or MCP
    /// messages.
    keeps_view: bool,
}

/// One request step.
enum RequestStep {
    StripPrefix(String),
    AddPrefix(String),
    RegexRewrite {
        pattern: Regex,
        substitution: String,
    },
    HostRewrite(HeaderValue),
    Headers(HeaderEdit),
    Redirect(RedirectConfig),
    Respond(StaticResponse),
    IpFilter(IpRules),
    HeaderLimit {
        fields: usize,
        bytes: usize,
    },
    RequestId {
        header: HeaderName,
        keep: bool,
    },
    Forwarded {
        trusted: Vec<IpNet>,
        forwarded: bool,
    },
    /// Answers preflights; its response step adds the headers.
    Cors(Arc<Cors>),
    BodyLimit(u64),
    Plugin(Arc<PluginStep>),
    Auth(Box<AuthStep>),
    /// CEL rules; `per_call` on MCP routes: judged for each JSON-RPC
    /// call, the request's variables kept for them in [`Routed`].
    Authorize {
        rules: Arc<Authorizer>,
        per_call: bool,
    },
    /// Asks an HTTP service (asynchronously: [`Chain::on_request`] awaits
    /// it, [`RequestStep::apply`] does nothing).
    ForwardAuth(Box<ForwardAuth>),
    /// Limits; `per_call` on MCP routes whose filter counts tool calls:
    /// the request's keys kept for them in [`Routed`].
    RateLimit {
        limits: Arc<RateLimits>,
        per_call: bool,
    },
}

/// An authentication filter's place in a chain: where it finds the
/// principal, and its decisions' counters.
struct AuthStep {
    source: Credentials,
    /// Whether a request without credentials is refused.
    required: bool,
    /// Filter name, for the audit log.
    name: String,
    authenticated: Counter,
    anonymous: Counter,
    missing: Counter,
    invalid: Counter,
    /// The requests of each principal it found.
    principals: PrincipalCounts,
}

/// Where an authentication filter finds the principal.
enum Credentials {
    /// An API key (`api-key`).
    ApiKey(ApiKeys),
    /// The client certificate the listener verified (`client-cert`).
    ClientCert,
    /// A JWT bearer token (`jwt`).
    Jwt(JwtIssuers),
}

/// What a request carries that a header template or a filter reads.
#[derive(Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The host the client addressed, without port.
    pub host: &'a str,
    /// The port the client addressed (`Host` header or `:authority`),
    /// when it named one.
    pub port: Option<u16>,
    /// Whether the client came over TLS.
    pub tls: bool,
    /// The route's position in `routes`.
    pub route: usize,
    /// The client certificate the listener verified.
    pub identity: Option<&'a ClientIdentity>,
}

/// What the response steps read of a request as it was routed (made only
/// when one of them will act on the answer: [`Chain::routed`]).
pub struct Routed<'a> {
    method: Method,
    uri: Uri,
    /// The request's `Origin` (kept when the chain has CORS).
    origin: Option<HeaderValue>,
    /// The request's `Accept-Encoding` (kept when the chain compresses).
    accept: HeaderMap,
    /// The request's id (with a `request-id` filter).
    request_id: Option<HeaderValue>,
    facts: RequestFacts<'a>,
    /// The request as each plugin step that keeps it saw it.
    views: Vec<(Arc<PluginStep>, FilterRequest)>,
    /// The principal an authentication filter found.
    principal: Option<Arc<Principal>>,
    /// On an MCP route, the rules that judge each call, with the
    /// request's variables.
    rules: Vec<ScopedRules>,
    /// On an MCP route, the limits that count tool calls, with the
    /// request's keys.
    quotas: Vec<ScopedQuotas>,
}

impl Chain {
    /// The chain of `names` (validated at load: each is a key of
    /// `filters`; a name that is missing is skipped) of route number
    /// `route` (an MCP route when `mcp`), its plugin filters loaded in
    /// `plugins`, counting its answers in `reporting`'s metrics and
    /// publishing its refusals on its event bus.
    pub fn build(
        names: &[String],
        filters: &BTreeMap<String, FilterConfig>,
        plugins: &BTreeMap<String, Arc<WasmFilter>>,
        (route, mcp): (usize, bool),
        reporting: &Reporting,
    ) -> Self {
        let metrics = &reporting.metrics;
        let mut chain = Chain {
            events: (!names.is_empty()).then(|| Arc::clone(&reporting.events)),
            ..Chain::default()
        };
        for name in names {
            let Some(filter) = filters.get(name) else {
                continue;
            };
            chain.names.push(name.clone());
            let step = match filter {
                FilterConfig::StripPrefix(p) => RequestStep::StripPrefix(p.prefix.clone()),
                FilterConfig::AddPrefix(p) => RequestStep::AddPrefix(p.prefix.clone()),
                FilterConfig::RegexRewrite(r) => match Regex::new(&r.pattern) {
                    Ok(pattern) => RequestStep::RegexRewrite {
                        pattern,
                        substitution: r.substitution.clone(),
                    },
                    Err(_) => continue,
                },
                FilterConfig::HostRewrite(h) => match HeaderValue::from_str(&h.host) {
                    Ok(host) => RequestStep::HostRewrite(host),
                    Err(_) => continue,
                },
                FilterConfig::RequestHeaders(rules) => RequestStep::Headers(HeaderEdit::new(rules)),
                FilterConfig::ResponseHeaders(rules) => {
                    chain
                        .response
                        .push(ResponseStep::Headers(HeaderEdit::new(rules)));
                    continue;
                }
                FilterConfig::HeaderLimit(h) => RequestStep::HeaderLimit {
                    fields: usize::try_from(h.max_headers).unwrap_or(usize::MAX),
                    bytes: usize::try_from(h.max_header_bytes).unwrap_or(usize::MAX),
                },
                FilterConfig::Forwarded(config) => RequestStep::Forwarded {
                    trusted: nets(&config.trusted_proxies),
                    forwarded: config.forwarded,
                },
                FilterConfig::RequestId(config) => match HeaderName::from_str(&config.header) {
                    Ok(header) => {
                        chain.response.push(ResponseStep::RequestId(header.clone()));
                        RequestStep::RequestId {
                            header,
                            keep: config.keep,
                        }
                    }
                    Err(_) => continue,
                },
                FilterConfig::Compress(config) => {
                    chain
                        .response
                        .push(ResponseStep::Compress(Compress::new(config)));
                    continue;
                }
                FilterConfig::Decompress(config) => {
                    let encodings = config
                        .algorithms
                        .iter()
                        .filter_map(|a| Encoding::of(a))
                        .collect();
                    chain.decompress = Some((encodings, config.max_decoded_bytes));
                    continue;
                }
                FilterConfig::Cors(config) => {
                    let cors = Arc::new(Cors::new(config));
                    chain.response.push(ResponseStep::Cors(Arc::clone(&cors)));
                    RequestStep::Cors(cors)
                }
                FilterConfig::Redirect(r) => RequestStep::Redirect(r.clone()),
                FilterConfig::Respond(r) => RequestStep::Respond(respond(r)),
                FilterConfig::IpFilter(ip) => RequestStep::IpFilter(IpRules::new(ip)),
                FilterConfig::BodyLimit(b) => {
                    chain.body_limit =
                        Some(chain.body_limit.map_or(b.max_bytes, |l| l.min(b.max_bytes)));
                    RequestStep::BodyLimit(b.max_bytes)
                }
                FilterConfig::ApiKey(_) | FilterConfig::ClientCert(_) | FilterConfig::Jwt(_) => {
                    let (source, mode) = match filter {
                        FilterConfig::ApiKey(config) => {
                            (Credentials::ApiKey(ApiKeys::new(config)), config.mode)
                        }
                        FilterConfig::ClientCert(config) => (Credentials::ClientCert, config.mode),
                        FilterConfig::Jwt(config) => {
                            (Credentials::Jwt(JwtIssuers::new(config)), config.mode)
                        }
                        _ => continue,
                    };
                    let decisions = |d| metrics.auth_decisions(route, name, d);
                    RequestStep::Auth(Box::new(AuthStep {
                        source,
                        required: mode == AuthMode::Required,
                        name: name.clone(),
                        authenticated: decisions("authenticated"),
                        anonymous: decisions("anonymous"),
                        missing: decisions("missing"),
                        invalid: decisions("invalid"),
                        principals: metrics.principal_counts(route, name),
                    }))
                }
                FilterConfig::Authorize(config) => {
                    let decisions = |d| metrics.auth_decisions(route, name, d);
                    // Scope challenges point at the chain's resource.
                    let metadata = names.iter().find_map(|n| match filters.get(n) {
                        Some(FilterConfig::Jwt(jwt)) => jwt.resource_metadata().map(|(_, url)| url),
                        _ => None,
                    });
                    RequestStep::Authorize {
                        rules: Arc::new(Authorizer::new(
                            config,
                            (name, route),
                            [decisions("allowed"), decisions("denied")],
                            Arc::clone(&reporting.events),
                            metadata.as_deref(),
                        )),
                        per_call: mcp,
                    }
                }
                FilterConfig::ForwardAuth(config) => {
                    let decisions = |d| metrics.auth_decisions(route, name, d);
                    let counters = [
                        decisions("allowed"),
                        decisions("denied"),
                        decisions("failed"),
                    ];
                    let principals = metrics.principal_counts(route, name);
                    match ForwardAuth::new(config, name, counters, principals) {
                        Ok(auth) => RequestStep::ForwardAuth(Box::new(auth)),
                        Err(reason) => {
                            // Validated at load; should it still fail, the
                            // route is closed rather than left open.
                            tracing::error!(filter = %name, %reason, "forward-auth filter could not be set up: its route answers 503");
                            RequestStep::Respond(StaticResponse::new(
                                503,
                                "{\"error\":\"filter_failed\"}",
                                &BTreeMap::new(),
                            ))
                        }
                    }
                }
                FilterConfig::RateLimit(config) => {
                    let limits = RateLimits::new(config, name, route, reporting);
                    if limits.counts_calls() && !mcp {
                        tracing::warn!(filter = %name, route, "limits of tool calls count nothing on a route that is not an MCP route");
                    }
                    RequestStep::RateLimit {
                        per_call: mcp && limits.counts_calls(),
                        limits: Arc::new(limits),
                    }
                }
                FilterConfig::Plugin(config) => {
                    let Some(filter) = plugins.get(name) else {
                        continue;
                    };
                    let step = Arc::new(PluginStep {
                        filter: Arc::clone(filter),
                        name: name.as_str().into(),
                        closed: config.failure_mode == FilterFailureMode::Closed,
                        keeps_view: filter.on_responses()
                            || filter.on_mcp_calls()
                            || filter.on_mcp_results(),
                    });
                    if filter.on_responses() {
                        chain.response.push(ResponseStep::Plugin(Arc::clone(&step)));
                    }
                    RequestStep::Plugin(step)
                }
            };
            let answered = metrics.filter_answers(route, name, step.answer());
            chain.request.push((step, answered, name.clone()));
        }
        chain.needs = Needs {
            request_path: chain
                .request
                .iter()
                .any(|(s, ..)| matches!(s, RequestStep::Headers(_))),
            response_path: chain
                .response
                .iter()
                .any(|s| matches!(s, ResponseStep::Headers(_))),
            every_answer: chain
                .response
                .iter()
                .any(|s| !matches!(s, ResponseStep::Cors(_)))
                || chain.request.iter().any(|(s, ..)| match s {
                    RequestStep::Plugin(p) => p.keeps_view,
                    RequestStep::Authorize { per_call, .. }
                    | RequestStep::RateLimit { per_call, .. } => *per_call,
                    _ => false,
                }),
            cors: chain
                .response
                .iter()
                .any(|s| matches!(s, ResponseStep::Cors(_))),
            compress: chain
                .response
                .iter()
                .any(|s| matches!(s, ResponseStep::Compress(_))),
            request_body: chain
                .request
                .iter()
                .filter_map(|(s, ..)| match s {
                    RequestStep::Plugin(p) => Some(p.filter.request_body_bytes()),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
        };
        chain
    }

    /// Whether the route has no filters (nothing to do per request).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The filters' names, in the route's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// What its `rate-limit` filters hold and decided, one JSON object
    /// per limit (see [`RateLimits::status`]).
    pub fn limits_status(&self) -> Vec<serde_json::Value> {
        self.request
            .iter()
            .filter_map(|(step, ..)| match step {
                RequestStep::RateLimit { limits, .. } => Some(limits.status()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The smallest `body-limit` of the chain, bytes, if it has one.
    pub fn body_limit(&self) -> Option<u64> {
        self.body_limit
    }

    /// How the body of a request with `headers` is decoded, when the
    /// chain has a `decompress` step and the body's `Content-Encoding` is
    /// one coding it decodes: the header and `Content-Length` are removed
    /// (the decoded body's length is not known yet). `None`: the body
    /// passes as it is.
    pub fn decode(&self, headers: &mut HeaderMap) -> Option<Decode> {
        let (encodings, max_decoded_bytes) = self.decompress.as_ref()?;
        let mut codings = headers.get_all(header::CONTENT_ENCODING).iter();
        let (Some(only), None) = (codings.next(), codings.next()) else {
            return None;
        };
        let encoding = only
            .to_str()
            .ok()
            .map(|t| t.trim().to_ascii_lowercase())
            .and_then(|t| Encoding::of(&t))
            .filter(|e| encodings.contains(e))?;
        headers.remove(header::CONTENT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        Some(Decode {
            encoding,
            max_decoded_bytes: *max_decoded_bytes,
        })
    }

    /// What the response steps will need of the request as it is now;
    /// `None` when none of them will act on its answer.
    pub fn routed<'a>(
        &self,
        parts: &http::request::Parts,
        facts: RequestFacts<'a>,
    ) -> Option<Routed<'a>> {
        let needs = self.needs;
        let origin = needs
            .cors
            .then(|| parts.headers.get(header::ORIGIN).cloned())
            .flatten();
        if !needs.every_answer && origin.is_none() {
            return None;
        }
        let mut accept = HeaderMap::new();
        if needs.compress {
            for value in parts.headers.get_all(header::ACCEPT_ENCODING) {
                accept.append(header::ACCEPT_ENCODING, value.clone());
            }
        }
        Some(Routed {
            method: parts.method.clone(),
            uri: if needs.response_path {
                parts.uri.clone()
            } else {
                Uri::default()
            },
            origin,
            accept,
            request_id: None,
            facts,
            views: Vec::new(),
            principal: None,
            rules: Vec::new(),
            quotas: Vec::new(),
        })
    }

    /// Applies the request steps to `parts`, in order. Before the first
    /// plugin step that asked to see the body's first bytes, reads them
    /// ahead from `body` (as many as the chain's plugins ask, each frame
    /// awaited at most the listener's `body_read_timeout_ms`).
    ///
    /// # Errors
    /// The answer a filter gives instead of serving: a response it made (a
    /// redirect or fixed response), or an error (403 for a refused client,
    /// 413 for a body over the limit, 400 for a path a rewrite made
    /// invalid); the client's fault while its body was read ahead (400,
    /// 408, 499).
    pub async fn on_request(
        &self,
        parts: &mut http::request::Parts,
        facts: &RequestFacts<'_>,
        mut routed: Option<&mut Routed<'_>>,
        body: &mut Received,
        limits: &ListenerRules,
    ) -> Result<(), Answer> {
        let original = if self.needs.request_path {
            parts.uri.clone()
        } else {
            Uri::default()
        };
        let method = parts.method.clone();
        for (step, answered, name) in &self.request {
            if let RequestStep::Plugin(plugin) = step
                && plugin.filter.request_body_bytes() > 0
            {
                read_ahead(body, self.needs.request_body, limits).await?;
            }
            let done = match step {
                RequestStep::Auth(auth) => {
                    auth.authenticate(parts, facts, routed.as_deref_mut()).await
                }
                RequestStep::RateLimit { limits, per_call } => {
                    // In flight first: a request refused there takes
                    // nothing of the rate limits.
                    let entered = match limits.enter(parts, facts) {
                        Ok(held) => limits.check(parts, facts).await.map(|f| (held, f)),
                        Err(error) => Err(error),
                    };
                    entered.map_err(Answer::Error).map(|(held, fields)| {
                        if let Some(fields) = fields {
                            parts.extensions.insert(fields);
                        }
                        if let Some(held) = held {
                            match parts.extensions.get_mut::<ConcurrencySlots>() {
                                Some(holding) => holding.join(held),
                                None => {
                                    parts.extensions.insert(held);
                                }
                            }
                        }
                        if let (true, Some(routed)) = (*per_call, routed.as_deref_mut()) {
                            let keys = limits.call_keys(parts, facts);
                            routed.quotas.push((Arc::clone(limits), keys));
                        }
                    })
                }
                RequestStep::ForwardAuth(auth) => auth.check(parts, facts).await.map(|principal| {
                    if let (Some(principal), Some(routed)) = (principal, routed.as_deref_mut()) {
                        routed.principal = Some(principal);
                    }
                }),
                _ => step.apply(
                    parts,
                    facts,
                    routed.as_deref_mut(),
                    &original,
                    &method,
                    body,
                ),
            };
            if let Err(answer) = &done {
                answered.inc();
                self.refused(name, answer, facts);
            }
            done?;
        }
        Ok(())
    }

    /// Publishes a `filter_refused` event when `answer`, filter `name`'s,
    /// is a refusal (an error, or a response of status 400 or more).
    fn refused(&self, name: &str, answer: &Answer, facts: &RequestFacts<'_>) {
        let status = match answer {
            Answer::Made(response) => response.status(),
            Answer::Error(error) => error.status(),
        };
        let (Some(events), true) = (&self.events, status.as_u16() >= 400) else {
            return;
        };
        let reason = match answer {
            Answer::Error(error) => error.to_string(),
            Answer::Made(_) => "its own answer".to_string(),
        };
        events.publish(HealthEvent::new(
            &format!("route {}", facts.route),
            Some(name),
            EventKind::FilterRefused,
            Severity::Info,
            format!(
                "filter {name} refused a request of {} with {}: {reason}",
                facts.peer.ip(),
                status.as_u16()
            ),
        ));
    }
}

impl RequestStep {
    /// What this step answers with when it answers itself (the `answer`
    /// label of `switchyard_filter_answers_total`).
    fn answer(&self) -> &'static str {
        match self {
            RequestStep::Redirect(_) => "redirect",
            RequestStep::Respond(_) => "respond",
            RequestStep::Cors(_) => "preflight",
            RequestStep::IpFilter(_) | RequestStep::Authorize { .. } => "forbidden",
            RequestStep::ForwardAuth(_) => "refused",
            RequestStep::RateLimit { .. } => "rate_limited",
            RequestStep::Plugin(_) => "plugin",
            RequestStep::Auth(step) => match step.source {
                Credentials::ApiKey(_) | Credentials::Jwt(_) => "unauthorized",
                Credentials::ClientCert => "forbidden",
            },
            RequestStep::BodyLimit(_) => "payload_too_large",
            RequestStep::HeaderLimit { .. } => "header_fields_too_large",
            RequestStep::StripPrefix(_)
            | RequestStep::AddPrefix(_)
            | RequestStep::RegexRewrite { .. }
            | RequestStep::HostRewrite(_)
            | RequestStep::Headers(_)
            | RequestStep::RequestId { .. }
            | RequestStep::Forwarded { .. } => "bad_request",
        }
    }

    /// Applies this step to `parts` (a plugin step reads the first bytes
    /// of `body` read ahead, when it asked for them).
    ///
    /// # Errors
    /// As [`Chain::on_request`].
    fn apply(
        &self,
        parts: &mut http::request::Parts,
        facts: &RequestFacts<'_>,
        routed: Option<&mut Routed<'_>>,
        original: &Uri,
        method: &Method,
        body: &Received,
    ) -> Result<(), Answer> {
        match self {
            RequestStep::StripPrefix(prefix) => {
                let rest = parts
                    .uri
                    .path()
                    .strip_prefix(prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|rest| if rest.is_empty() { "/" } else { rest }.to_owned());
                if let Some(rest) = rest {
                    set_path(&mut parts.uri, rest)?;
                }
            }
            RequestStep::AddPrefix(prefix) => {
                let path = format!("{prefix}{}", parts.uri.path());
                set_path(&mut parts.uri, path)?;
            }
            RequestStep::RegexRewrite {
                pattern,
                substitution,
            } => {
                let path = pattern.replace_all(parts.uri.path(), substitution.as_str());
                if let std::borrow::Cow::Owned(path) = path {
                    set_path(&mut parts.uri, path)?;
                }
            }
            RequestStep::HostRewrite(host) => {
                parts.headers.insert(header::HOST, host.clone());
            }
            RequestStep::Headers(edit) => {
                let principal = parts.extensions.get::<Arc<Principal>>().map(|p| &**p);
                edit.apply(&mut parts.headers, facts, method, original, principal);
            }
            RequestStep::Redirect(redirect) => {
                return Err(Answer::Made(Box::new(redirect_to(
                    redirect, &parts.uri, facts,
                )?)));
            }
            RequestStep::Respond(response) => {
                return Err(Answer::Made(Box::new(response.to_response())));
            }
            RequestStep::IpFilter(rules) => {
                let client = rules.client(facts.peer.ip(), &parts.headers);
                if !rules.admits(client) {
                    return Err(Answer::Error(ProxyError::Forbidden(format!(
                        "client {client} is not admitted on this route"
                    ))));
                }
            }
            RequestStep::HeaderLimit { fields, bytes } => {
                if parts.headers.len() > *fields {
                    return Err(Answer::Error(ProxyError::HeadersTooLarge {
                        limit: format!("{fields} fields"),
                    }));
                }
                let size: usize = parts
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len())
                    .sum();
                if size > *bytes {
                    return Err(Answer::Error(ProxyError::HeadersTooLarge {
                        limit: format!("{bytes} bytes"),
                    }));
                }
            }
            RequestStep::Forwarded { trusted, forwarded } => {
                forward_headers(&mut parts.headers, facts, trusted, *forwarded);
            }
            RequestStep::RequestId { header, keep } => {
                let id = parts
                    .headers
                    .get(header)
                    .filter(|v| *keep && !v.is_empty() && v.len() <= 128)
                    .cloned()
                    .unwrap_or_else(new_request_id);
                parts.headers.insert(header.clone(), id.clone());
                if let Some(routed) = routed {
                    routed.request_id = Some(id);
                }
            }
            RequestStep::Cors(cors) => {
                if let Some(preflight) = cors.preflight(parts) {
                    return Err(Answer::Made(Box::new(preflight)));
                }
            }
            RequestStep::Plugin(step) => step.on_request(parts, facts, routed, body)?,
            // Asynchronous (a JWKS may be fetched): in `Chain::on_request`.
            RequestStep::Auth(_) | RequestStep::ForwardAuth(_) => {}
            // Asynchronous (Redis may be asked): in `Chain::on_request`.
            RequestStep::RateLimit { .. } => {}
            RequestStep::Authorize { rules, per_call } => match routed {
                Some(routed) if *per_call => routed
                    .rules
                    .push((Arc::clone(rules), Scope::of(parts, facts))),
                _ => rules
                    .judge(&Facts::of(parts, facts), None)
                    .map_err(|refusal| Answer::Error(ProxyError::Forbidden(refusal.message)))?,
            },
            RequestStep::BodyLimit(limit) => {
                let declared = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|length| length > *limit) {
                    return Err(Answer::Error(ProxyError::PayloadTooLarge {
                        limit_bytes: *limit,
                    }));
                }
            }
        }
        Ok(())
    }
}

impl Chain {
    /// Applies the response steps to `response`, in order; a plugin step
    /// that asked to see the body's first bytes has them read ahead first.
    pub async fn on_response(&self, response: &mut Response<ProxyBody>, routed: &Routed<'_>) {
        for step in &self.response {
            match step {
                ResponseStep::Headers(edit) => {
                    let headers = response.headers_mut();
                    edit.apply(
                        headers,
                        &routed.facts,
                        &routed.method,
                        &routed.uri,
                        routed.principal.as_deref(),
                    );
                }
                ResponseStep::RequestId(header) => {
                    if let Some(id) = &routed.request_id {
                        response.headers_mut().insert(header.clone(), id.clone());
                    }
                }
                ResponseStep::Cors(cors) => {
                    if let Some(origin) = &routed.origin {
                        cors.on_response(response.headers_mut(), origin);
                    }
                }
                ResponseStep::Compress(compress) => {
                    let encoding = compress.negotiate(&routed.accept);
                    compress.apply(response, &routed.method, encoding);
                }
                ResponseStep::Plugin(step) => {
                    if let Some((_, view)) = routed.views.iter().find(|v| Arc::ptr_eq(&v.0, step)) {
                        let body =
                            read_answer_ahead(response, step.filter.response_body_bytes()).await;
                        step.on_response(response, view, body);
                    }
                }
            }
        }
    }
}

impl Routed<'_> {
    /// The plugins that see this request's MCP calls or results, with the
    /// request as each saw it.
    pub fn mcp_guards(&self) -> Guards {
        Guards::new(
            self.views
                .iter()
                .filter(|(step, _)| step.filter.on_mcp_calls() || step.filter.on_mcp_results())
                .map(|(step, view)| McpGuard {
                    filter: Arc::clone(&step.filter),
                    name: Arc::clone(&step.name),
                    closed: step.closed,
                    view: view.clone(),
                })
                .collect(),
            self.rules.clone(),
            self.quotas.clone(),
        )
    }
}

impl AuthStep {
    /// Finds the request's principal (an API key is taken out of the
    /// request either way), unless a filter before found one; counts and
    /// logs the decision (target `switchyard::audit`: refusals at `info`,
    /// the rest at `debug`).
    ///
    /// # Errors
    /// For credentials that name no principal, or for none when they are
    /// required: 401 with a challenge (an API key), 403 (a client
    /// certificate, which no challenge can ask for).
    async fn authenticate(
        &self,
        parts: &mut http::request::Parts,
        facts: &RequestFacts<'_>,
        routed: Option<&mut Routed<'_>>,
    ) -> Result<(), Answer> {
        let checked = match &self.source {
            Credentials::ApiKey(keys) => keys.check(parts),
            Credentials::ClientCert => client_cert(facts),
            Credentials::Jwt(issuers) => issuers.check(parts).await,
        };
        if parts.extensions.get::<Arc<Principal>>().is_some() {
            return Ok(());
        }
        let (route, filter, client) = (facts.route, self.name.as_str(), facts.peer.ip());
        let (reason, missing) = match checked {
            Check::Found(principal) => {
                self.authenticated.inc();
                self.principals.count(&principal.id);
                tracing::debug!(target: "switchyard::audit", route, filter, %client, principal = %principal.id, decision = "authenticated");
                if let Some(routed) = routed {
                    routed.principal = Some(Arc::clone(&principal));
                }
                parts.extensions.insert(principal);
                return Ok(());
            }
            Check::Missing if !self.required => {
                self.anonymous.inc();
                tracing::debug!(target: "switchyard::audit", route, filter, %client, decision = "anonymous");
                return Ok(());
            }
            Check::Missing => {
                self.missing.inc();
                let reason = match &self.source {
                    Credentials::ApiKey(keys) => {
                        format!("an API key is needed in `{}`", keys.header())
                    }
                    Credentials::ClientCert => {
                        "a verified client certificate is needed".to_string()
                    }
                    Credentials::Jwt(_) => "a bearer token is needed".to_string(),
                };
                (reason, true)
            }
            Check::Invalid(reason) => {
                self.invalid.inc();
                (reason, false)
            }
        };
        tracing::info!(target: "switchyard::audit", route, filter, %client, decision = "refused", %reason);
        // RFC 6750 §3: a bad token's challenge says `invalid_token`.
        let challenge = match (&self.source, missing) {
            (Credentials::ClientCert, _) => {
                return Err(Answer::Error(ProxyError::Forbidden(reason)));
            }
            (Credentials::ApiKey(_), _) => r#"ApiKey realm="switchyard""#.into(),
            (Credentials::Jwt(issuers), missing) => issuers.challenge(missing),
        };
        Err(Answer::Error(ProxyError::Unauthorized {
            reason,
            challenge,
        }))
    }
}

/// The principal of the client certificate the listener verified: its
/// first subject alternative name.
fn client_cert(facts: &RequestFacts<'_>) -> Check {
    match facts.identity.and_then(|i| i.sans.first()) {
        Some(name) => Check::Found(Arc::new(Principal {
            id: name.clone(),
            method: "client-cert",
            metadata: BTreeMap::new(),
            scopes: Vec::new(),
        })),
        None => Check::Missing,
    }
}

impl PluginStep {
    /// Asks the plugin about the request `parts` (and the first bytes of
    /// `body` read ahead, when it asked for them); keeps its view in
    /// `routed` when it will be asked again.
    ///
    /// # Errors
    /// The plugin's response, a rewritten path that is invalid (400), or
    /// under `closed` its fault (503).
    fn on_request(
        self: &Arc<Self>,
        parts: &mut http::request::Parts,
        facts: &RequestFacts<'_>,
        routed: Option<&mut Routed<'_>>,
        body: &Received,
    ) -> Result<(), Answer> {
        let context = RequestContext {
            method: &parts.method,
            authority: facts.host,
            path: parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            headers: &parts.headers,
            client_addr: facts.peer,
        };
        let identity = facts
            .identity
            .and_then(|i| i.sans.first())
            .map(String::as_str);
        let asked = self.filter.request_body_bytes();
        let body = (asked > 0).then(|| body.prefix(asked));
        let view = self.filter.view(&context, identity, facts.route, body);
        let verdict = self.filter.on_request(&view);
        if let (true, Some(routed)) = (self.keeps_view, routed) {
            routed.views.push((Arc::clone(self), view));
        }
        match verdict {
            Ok(FilterVerdict::Continue) => Ok(()),
            Ok(FilterVerdict::Change((path, changes))) => {
                if let Some(path) = path {
                    set_path_and_query(&mut parts.uri, path)?;
                }
                changes.apply(&mut parts.headers);
                Ok(())
            }
            Ok(FilterVerdict::Respond(made)) => Err(Answer::Made(Box::new(made_response(made)))),
            Err(fault) => self.faulted(&fault),
        }
    }

    /// Asks the plugin about `response` to the request it saw as `view`,
    /// with its body's first bytes `body` when it asked for them.
    fn on_response(
        &self,
        response: &mut Response<ProxyBody>,
        view: &FilterRequest,
        body: Option<(Vec<u8>, bool)>,
    ) {
        match self
            .filter
            .on_response(view, response.status(), response.headers(), body)
        {
            Ok(FilterVerdict::Continue) => {}
            Ok(FilterVerdict::Change(changes)) => changes.apply(response.headers_mut()),
            Ok(FilterVerdict::Respond(made)) => {
                *response = made_response(made).map(ProxyBody::Local);
            }
            Err(fault) => {
                if let Err(Answer::Error(error)) = self.faulted(&fault) {
                    *response = error.into_response().map(ProxyBody::Local);
                }
            }
        }
    }

    /// What a fault costs the request: nothing under `open`, 503 under
    /// `closed`.
    fn faulted(&self, fault: &Fault) -> Result<(), Answer> {
        if self.closed {
            Err(Answer::Error(ProxyError::FilterFailed {
                filter: self.name.to_string(),
                reason: fault.to_string(),
            }))
        } else {
            Ok(())
        }
    }
}

/// The first `bytes` of `response`'s body (none when 0, or for an event
/// stream, which may never end) and whether they are all of it, read
/// ahead: the body becomes one that sends them again, then the rest. A
/// body that fails while being read fails the same way for the client,
/// after the bytes read.
async fn read_answer_ahead(
    response: &mut Response<ProxyBody>,
    bytes: usize,
) -> Option<(Vec<u8>, bool)> {
    let stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    if bytes == 0 || stream {
        return None;
    }
    let body = response.body_mut();
    if !matches!(body, ProxyBody::Ahead(_)) {
        let taken = std::mem::replace(body, ProxyBody::Local(Full::default()));
        *body = ProxyBody::Ahead(Box::new(ReadAhead::new(taken)));
    }
    let ProxyBody::Ahead(ahead) = body else {
        return None;
    };
    // A failure is kept in the body and reaches the client as it streams.
    let _ = ahead.read(bytes, None).await;
    Some(ahead.prefix(bytes))
}

/// The response a filter plugin made.
fn made_response(made: MadeResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(made.body));
    *response.status_mut() = made.status;
    *response.headers_mut() = made.headers;
    response
}

/// What a filter answers instead of serving.
pub enum Answer {
    /// A response it made (redirect, fixed response).
    Made(Box<Response<Full<Bytes>>>),
    /// A refusal, answered as the error's JSON.
    Error(ProxyError),
}

impl From<ProxyError> for Answer {
    fn from(error: ProxyError) -> Self {
        Answer::Error(error)
    }
}

/// A new request id: 128 random bits as 32 lowercase hex digits (the
/// shape of nginx's `$request_id`).
fn new_request_id() -> HeaderValue {
    let id = format!("{:032x}", fastrand::u128(..));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// Replaces the path of `uri`, keeping its query.
fn set_path(uri: &mut Uri, path: String) -> Result<(), ProxyError> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    }
    .map_err(|e| ProxyError::BadRequest(format!("the rewritten path is invalid: {e}")))?;
    set_path_and_query(uri, path_and_query)
}

/// Replaces the path and query of `uri`.
fn set_path_and_query(uri: &mut Uri, path_and_query: PathAndQuery) -> Result<(), ProxyError> {
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(path_and_query);
    *uri = Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("the rewritten URI is invalid: {e}")))?;
    Ok(())
}

/// The redirect for a request to `uri`: Envoy's redirect action (what the
/// filter does not give is the request's own; a new scheme or host drops
/// the request's port unless `port` is given).
fn redirect_to(
    redirect: &RedirectConfig,
    uri: &Uri,
    facts: &RequestFacts<'_>,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let scheme = redirect
        .scheme
        .as_deref()
        .unwrap_or(if facts.tls { "https" } else { "http" });
    let host = redirect.host.as_deref().unwrap_or(facts.host);
    let port = match redirect.port {
        Some(port) => Some(port),
        None if redirect.scheme.is_some() || redirect.host.is_some() => None,
        None => facts.port,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default_port) {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(redirect.path.as_deref().unwrap_or(uri.path()));
    if let (false, Some(query)) = (redirect.strip_query, uri.query()) {
        location.push('?');
        location.push_str(query);
    }
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::BadRequest(format!("the redirect `{location}` is invalid")))?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() =
        StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The fixed response of a `respond` filter.
fn respond(config: &RespondConfig) -> StaticResponse {
    let mut headers = config.headers.clone();
    headers.insert("content-type".into(), config.content_type.clone());
    StaticResponse::new(config.status, &config.body, &headers)
}

/// A `request-headers` or `response-headers` filter, compiled.
struct HeaderEdit {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

impl HeaderEdit {
    fn new(rules: &HeaderRules) -> Self {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .filter_map(|(name, value)| {
                    Some((HeaderName::from_str(name).ok()?, Template::new(value)?))
                })
                .collect()
        };
        Self {
            remove: rules
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_str(n).ok())
                .collect(),
            set: pairs(&rules.set),
            add: pairs(&rules.add),
        }
    }

    fn apply(
        &self,
        headers: &mut HeaderMap,
        facts: &RequestFacts<'_>,
        method: &Method,
        uri: &Uri,
        principal: Option<&Principal>,
    ) {
        for name in &self.remove {
            headers.remove(name);
        }
        let render = |template: &Template| template.render(facts, method, uri, principal);
        for (name, template) in &self.set {
            if let Some(value) = render(template) {
                headers.insert(name.clone(), value);
            }
        }
        for (name, template) in &self.add {
            if let Some(value) = render(template) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// A header value template: a fixed value, or text and variables.
enum Template {
    Fixed(HeaderValue),
    Parts(Vec<TemplatePart>),
}

impl Template {
    /// `text` compiled (validated at load; `None` for what validation
    /// refuses).
    fn new(text: &str) -> Option<Self> {
        let parts = parse_template(text).ok()?;
        match parts.as_slice() {
            [] => Some(Template::Fixed(HeaderValue::from_static(""))),
            [TemplatePart::Literal(text)] => HeaderValue::from_str(text).ok().map(Template::Fixed),
            _ => Some(Template::Parts(parts)),
        }
    }

    /// The value for a request (as `principal`, when one was found);
    /// `None` when a variable's value cannot be a header value.
    fn render(
        &self,
        facts: &RequestFacts<'_>,
        method: &Method,
        uri: &Uri,
        principal: Option<&Principal>,
    ) -> Option<HeaderValue> {
        let parts = match self {
            Template::Fixed(value) => return Some(value.clone()),
            Template::Parts(parts) => parts,
        };
        use std::fmt::Write as _;
        let mut value = String::with_capacity(64);
        for part in parts {
            match part {
                TemplatePart::Literal(text) => value.push_str(text),
                TemplatePart::Variable(variable) => match variable {
                    Variable::ClientIp => {
                        let _ = write!(value, "{}", facts.peer.ip());
                    }
                    Variable::Host => value.push_str(facts.host),
                    Variable::Method => value.push_str(method.as_str()),
                    Variable::Path => value.push_str(uri.path()),
                    Variable::Scheme => value.push_str(if facts.tls { "https" } else { "http" }),
                    Variable::Route => {
                        let _ = write!(value, "{}", facts.route);
                    }
                    Variable::ClientIdentity => {
                        if let Some(name) = facts.identity.and_then(|i| i.sans.first()) {
                            value.push_str(name);
                        }
                    }
                    Variable::Principal => {
                        if let Some(principal) = principal {
                            value.push_str(&principal.id);
                        }
                    }
                },
            }
        }
        HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
    }
}

/// A `cors` filter, compiled: the Fetch standard's CORS protocol as
/// Envoy's and Traefik's CORS filters answer it.
struct Cors {
    /// `None`: any origin (`*`).
    origins: Option<Vec<String>>,
    methods: HeaderValue,
    /// `None`: whatever a preflight asks for (`*`).
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Cors {
    fn new(config: &CorsConfig) -> Self {
        let list = |items: &[String]| HeaderValue::from_str(&items.join(", ")).ok();
        let any = |items: &[String]| items.iter().any(|i| i == "*");
        Self {
            origins: (!any(&config.allow_origins)).then(|| config.allow_origins.clone()),
            methods: list(&config.allow_methods).unwrap_or(HeaderValue::from_static("")),
            headers: if any(&config.allow_headers) {
                None
            } else {
                list(&config.allow_headers)
            },
            expose: Some(&config.expose_headers)
                .filter(|e| !e.is_empty())
                .and_then(|e| list(e)),
            credentials: config.allow_credentials,
            max_age: config.max_age_s.map(HeaderValue::from),
        }
    }

    /// Whether `origin` may read the answers.
    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.origins
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| origin_matches(p, origin)))
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`): 204, with the `Access-Control-*`
    /// headers when the origin is allowed (the browser then checks the
    /// method and headers itself), without them when it is not. `None` for
    /// any other request.
    fn preflight(&self, parts: &http::request::Parts) -> Option<Response<Full<Bytes>>> {
        let origin = parts.headers.get(header::ORIGIN)?;
        if parts.method != Method::OPTIONS
            || !parts
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        for vary in [
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ] {
            headers.append(header::VARY, HeaderValue::from_static(vary));
        }
        if !self.allows(origin) {
            return Some(response);
        }
        self.allow_origin(headers, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let asked = parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(allowed) = self.headers.as_ref().or(asked) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        Some(response)
    }

    /// The headers of an answer to a request from `origin`.
    fn on_response(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        if !self.allows(origin) {
            return;
        }
        self.allow_origin(headers, origin);
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// `Access-Control-Allow-Origin` (`*` when any origin may, without
    /// credentials; else the origin itself, with `Vary: Origin`) and
    /// `-Allow-Credentials`.
    fn allow_origin(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        if self.origins.is_none() && !self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if !headers
                .get_all(header::VARY)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin"))
            {
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The addresses and blocks of `list` (validated at load).
fn nets(list: &[String]) -> Vec<IpNet> {
    list.iter().filter_map(|e| parse_cidr(e).ok()).collect()
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// A `forwarded` filter's step: the forwarding headers of a client that is
/// not a trusted proxy are removed; `X-Forwarded-Host` is set from the
/// host the client asked for when none was kept; with `forwarded`, this
/// hop's `Forwarded` element (RFC 7239 §4: `for`, `proto`, `host`; an IPv6
/// address quoted in brackets) is appended. `X-Forwarded-For` and
/// `-Proto` are then written for every request as before
/// (`proxy::prepare_request`).
fn forward_headers(
    headers: &mut HeaderMap,
    facts: &RequestFacts<'_>,
    trusted: &[IpNet],
    forwarded: bool,
) {
    let peer = facts.peer.ip();
    if !trusted.iter().any(|n| n.contains(&peer)) {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let host = headers.get(header::HOST).cloned();
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = &host
    {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    if forwarded {
        let node = match peer {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let proto = if facts.tls { "https" } else { "http" };
        let mut element = format!("for={node};proto={proto}");
        if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
            element.push_str(&format!(";host=\"{host}\""));
        }
        if let Ok(value) = HeaderValue::from_str(&element) {
            headers.append(FORWARDED.clone(), value);
        }
    }
}

/// An `ip-filter`, compiled.
struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

impl IpRules {
    fn new(config: &IpFilterConfig) -> Self {
        Self {
            allow: nets(&config.allow),
            deny: nets(&config.deny),
            trusted_proxies: nets(&config.trusted_proxies),
        }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&address))
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the rightmost `X-Forwarded-For` address that is not one
    /// (nginx's `real_ip_recursive on`). An unparsable entry ends the walk
    /// at the last address believed.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(address) = IpAddr::from_str(hop.trim()) else {
                break;
            };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        client
    }

    /// Whether `client` may use the route: not denied, and allowed when
    /// there is an allow list.
    fn admits(&self, client: IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(&client))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&client)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_proxy_chain_is_walked_from_the_right() {
        let rules = IpRules::new(&IpFilterConfig {
            allow: vec!["192.0.2.0/24".into()],
            deny: vec!["192.0.2.66".into()],
            trusted_proxies: vec!["10.0.0.0/8".into()],
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 192.0.2.7, 10.1.1.1"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            rules.client(peer, &headers),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is not believed.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(rules.client(stranger, &headers), stranger);
        assert!(rules.admits("192.0.2.7".parse().unwrap()));
        assert!(!rules.admits("192.0.2.66".parse().unwrap()));
        assert!(!rules.admits(stranger));
    }
}
