//! Sticky sessions: one session's requests go to one instance while it is fit.
//!
//! Composable with every strategy: the bound instance is put first in the
//! strategy's ranking, so the engine's filter still applies — when the bound
//! instance is unfit, unreachable or gone, the strategy's own choice serves
//! the request, and the session is re-bound to it only when it answered
//! successfully (below 400): a 404 from a server that does not know the
//! session (an MCP server, for a session id another server assigned) goes
//! to the client as it is, which then starts a new session.
//!
//! Draining (Envoy's and HAProxy's graceful drain): a draining instance takes
//! no new sessions, but keeps the sessions bound to it until
//! `drain_timeout_ms` after the drain started ([`Sticky::keeps`]); with
//! `drain_sessions = "move"` they move at once.
//!
//! Two ways to name a session (see [`StickyConfig`]):
//! - **cookie**: switchyard sets a cookie whose value names the instance (16
//!   hex digits of xxHash64 of its URL, as Traefik's sticky cookie hashes the
//!   server). Stateless: no table, the same on every replica and across
//!   restarts; `Max-Age` is `ttl_ms`.
//! - **header**: the session id is a request header (e.g. `mcp-session-id`);
//!   a first response carrying the header (an MCP server assigns the id when
//!   it answers `initialize`) binds the new id. The table is a `moka` cache of
//!   at most `max_sessions` ids, each dropped after `ttl_ms` unused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use moka::sync::Cache;
use xxhash_rust::xxh64::xxh64;

use super::{ById, Endpoint, EndpointId, RANK_LIMIT, Ranking, cookie_value};
use switchyard_config::{DrainSessions, StickyConfig};

/// A pool's session affinity.
pub struct Sticky {
    mode: Mode,
    /// How long a draining instance keeps its sessions, ms (`None`: it
    /// gives them up at once).
    drain_keep_ms: Option<u64>,
}

enum Mode {
    Cookie {
        name: String,
        by_value: HashMap<String, EndpointId>,
        set_cookie: ById<HeaderValue>,
    },
    Header {
        name: HeaderName,
        sessions: Cache<String, EndpointId>,
    },
}

/// What a request says about its session: the instance it is bound to, and
/// (header mode) its session id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// The instance the session is bound to, if any.
    pub bound: Option<EndpointId>,
    session: Option<String>,
}

impl Sticky {
    /// Affinity for the pool `endpoints`; `config` was validated at load.
    /// In header mode the session table of `previous` (the pool's
    /// generation before a membership change, same config) is kept: sessions
    /// name instances by stable id, so a session of an instance that stays
    /// stays bound to it.
    pub fn new(
        config: &StickyConfig,
        endpoints: &[Arc<Endpoint>],
        previous: Option<&Sticky>,
    ) -> Self {
        let ttl = Duration::from_millis(config.ttl_ms);
        let mode = match (&config.cookie, &config.header) {
            (Some(name), _) => Mode::Cookie {
                name: name.clone(),
                by_value: endpoints.iter().map(|e| (cookie_for(e), e.id)).collect(),
                set_cookie: ById::build(endpoints, |e| {
                    let text = format!(
                        "{name}={}; Path=/; Max-Age={}; HttpOnly",
                        cookie_for(e),
                        ttl.as_secs().max(1)
                    );
                    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
                }),
            },
            (None, header) => Mode::Header {
                name: header
                    .as_deref()
                    .and_then(|h| HeaderName::try_from(h).ok())
                    .unwrap_or(HeaderName::from_static("mcp-session-id")),
                sessions: match previous.map(|p| &p.mode) {
                    Some(Mode::Header { sessions, .. }) => sessions.clone(),
                    _ => Cache::builder()
                        .max_capacity(config.max_sessions)
                        .time_to_idle(ttl)
                        .build(),
                },
            },
        };
        let drain_keep_ms =
            (config.drain_sessions == DrainSessions::Keep).then_some(config.drain_timeout_ms);
        Self {
            mode,
            drain_keep_ms,
        }
    }

    /// Whether a session bound to `endpoint` may still go to it: it is not
    /// draining, or it drains in `keep` mode and `now_ms` (pool clock) is
    /// within `drain_timeout_ms` of the drain's start.
    pub fn keeps(&self, endpoint: &Endpoint, now_ms: u64) -> bool {
        match (endpoint.drain_started_ms(), self.drain_keep_ms) {
            (None, _) => true,
            (Some(started), Some(keep_ms)) => now_ms < started.saturating_add(keep_ms),
            (Some(_), None) => false,
        }
    }

    /// The request's session and the instance it is bound to.
    pub fn lookup(&self, headers: &HeaderMap) -> Affinity {
        match &self.mode {
            Mode::Cookie { name, by_value, .. } => Affinity {
                bound: cookie_value(headers, name).and_then(|v| by_value.get(v).copied()),
                session: None,
            },
            Mode::Header { name, sessions } => {
                let session = headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Affinity {
                    bound: session.as_ref().and_then(|s| sessions.get(s)),
                    session,
                }
            }
        }
    }

    /// Puts the bound instance first in `ranking`.
    pub fn prefer(affinity: &Affinity, ranking: &mut Ranking) {
        if let Some(id) = affinity.bound {
            ranking.retain(|x| *x != id);
            ranking.insert(0, id);
            ranking.truncate(RANK_LIMIT);
        }
    }

    /// After instance `served` answered with `status`: binds the session to
    /// it when it was not bound there already and the answer is a success
    /// (below 400) — a `Set-Cookie` on `response` (cookie mode), or a table
    /// entry for the request's session id or, failing that, the id the
    /// response assigned (header mode).
    pub fn bind(
        &self,
        affinity: &Affinity,
        served: EndpointId,
        status: http::StatusCode,
        response: &mut HeaderMap,
    ) {
        if affinity.bound == Some(served) || status.as_u16() >= 400 {
            return;
        }
        match &self.mode {
            Mode::Cookie { set_cookie, .. } => {
                if let Some(value) = set_cookie.get(served) {
                    response.append(header::SET_COOKIE, value.clone());
                }
            }
            Mode::Header { name, sessions } => {
                let assigned = || {
                    response
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                if let Some(session) = affinity.session.clone().or_else(assigned) {
                    sessions.insert(session, served);
                }
            }
        }
    }
}

/// The cookie value naming `endpoint`.
fn cookie_for(endpoint: &Endpoint) -> String {
    format!("{:016x}", xxh64(endpoint.url.as_bytes(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::next_candidate;
    use crate::balance::tests::pool;
    use proptest::{prop_assert_eq, proptest};

    fn header_mode(endpoints: &[Arc<Endpoint>]) -> Sticky {
        Sticky::new(
            &StickyConfig {
                cookie: None,
                header: Some("mcp-session-id".into()),
                ttl_ms: 60_000,
                max_sessions: 1000,
                drain_sessions: DrainSessions::Move,
                drain_timeout_ms: 0,
            },
            endpoints,
            None,
        )
    }

    fn with_session(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("mcp-session-id", id.parse().unwrap());
        h
    }

    /// Serves one request of `headers`' session: the instance chosen when
    /// the strategy would have picked `strategy_choice`.
    fn serve(
        sticky: &Sticky,
        endpoints: &[Arc<Endpoint>],
        headers: &HeaderMap,
        strategy_choice: u32,
    ) -> u32 {
        let affinity = sticky.lookup(headers);
        let mut ranking: Ranking = [strategy_choice].into_iter().collect();
        Sticky::prefer(&affinity, &mut ranking);
        let served = next_candidate(
            &ranking,
            &crate::balance::Members::new(endpoints.to_vec()),
            &[],
            0,
            true,
            None,
        )
        .unwrap();
        sticky.bind(
            &affinity,
            served,
            http::StatusCode::OK,
            &mut HeaderMap::new(),
        );
        served
    }

    #[test]
    fn cookie_mode_sets_a_cookie_once_and_follows_it() {
        let endpoints = pool(3);
        let sticky = Sticky::new(
            &StickyConfig {
                cookie: Some("sy".into()),
                header: None,
                ttl_ms: 60_000,
                max_sessions: 1,
                drain_sessions: DrainSessions::Keep,
                drain_timeout_ms: 0,
            },
            &endpoints,
            None,
        );
        let mut response = HeaderMap::new();
        sticky.bind(
            &sticky.lookup(&HeaderMap::new()),
            2,
            http::StatusCode::OK,
            &mut response,
        );
        let set = response[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            set.starts_with("sy=") && set.contains("Max-Age=60"),
            "{set}"
        );
        let mut request = HeaderMap::new();
        request.insert(
            header::COOKIE,
            set.split(';').next().unwrap().parse().unwrap(),
        );
        let affinity = sticky.lookup(&request);
        assert_eq!(affinity.bound, Some(2));
        let mut again = HeaderMap::new();
        sticky.bind(&affinity, 2, http::StatusCode::OK, &mut again);
        assert!(again.is_empty(), "a bound session gets no new cookie");
    }

    #[test]
    fn header_mode_binds_the_id_a_response_assigns() {
        let endpoints = pool(3);
        let sticky = header_mode(&endpoints);
        let mut response = HeaderMap::new();
        response.insert("mcp-session-id", "new-session".parse().unwrap());
        sticky.bind(
            &sticky.lookup(&HeaderMap::new()),
            1,
            http::StatusCode::OK,
            &mut response,
        );
        assert_eq!(sticky.lookup(&with_session("new-session")).bound, Some(1));
    }

    #[test]
    fn a_failed_answer_binds_nothing() {
        let sticky = header_mode(&pool(2));
        let mut response = HeaderMap::new();
        response.insert("mcp-session-id", "assigned".parse().unwrap());
        let lost = sticky.lookup(&with_session("lost"));
        sticky.bind(&lost, 1, http::StatusCode::NOT_FOUND, &mut response);
        assert_eq!(sticky.lookup(&with_session("lost")).bound, None);
        assert_eq!(sticky.lookup(&with_session("assigned")).bound, None);
        sticky.bind(&lost, 1, http::StatusCode::OK, &mut response);
        assert_eq!(sticky.lookup(&with_session("lost")).bound, Some(1));
    }

    #[test]
    fn a_draining_instance_keeps_its_sessions_until_the_drain_timeout() {
        let endpoints = pool(1);
        let config = |drain_sessions| StickyConfig {
            cookie: None,
            header: None,
            ttl_ms: 60_000,
            max_sessions: 10,
            drain_sessions,
            drain_timeout_ms: 500,
        };
        let keep = Sticky::new(&config(DrainSessions::Keep), &endpoints, None);
        let moving = Sticky::new(&config(DrainSessions::Move), &endpoints, None);
        assert!(keep.keeps(&endpoints[0], 0) && moving.keeps(&endpoints[0], 0));
        endpoints[0].set_draining(true, 100);
        endpoints[0].set_draining(true, 300);
        assert!(
            keep.keeps(&endpoints[0], 599),
            "within 500 ms of the first drain"
        );
        assert!(!keep.keeps(&endpoints[0], 600));
        assert!(!moving.keeps(&endpoints[0], 101));
    }

    proptest! {
        /// A session stays on its instance while that instance is fit; when
        /// it drains, the session moves once and stays on the new instance.
        #[test]
        fn sessions_stay_while_their_instance_is_fit(
            picks in proptest::collection::vec((0u32..20, 0u32..5), 1..200),
            drained in 0u32..5,
        ) {
            let endpoints = pool(5);
            let sticky = header_mode(&endpoints);
            let mut home: HashMap<u32, u32> = HashMap::new();
            for (i, (session, choice)) in picks.iter().enumerate() {
                if i == picks.len() / 2 {
                    endpoints[drained as usize].set_draining(true, 0);
                    home.retain(|_, h| *h != drained);
                }
                let headers = with_session(&format!("s{session}"));
                let served = serve(&sticky, &endpoints, &headers, *choice);
                let expected = *home.entry(*session).or_insert(served);
                prop_assert_eq!(served, expected);
            }
        }
    }
}
