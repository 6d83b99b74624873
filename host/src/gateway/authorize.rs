//! Authorization by rules: an `authorize` filter's CEL expressions judged
//! over the request, its principal and, on MCP routes, each JSON-RPC call
//! (the variables are those of [`AuthorizeConfig`]). A request passes when
//! every `require` expression is `true` and, when `allow` lists any, one
//! of them is — Envoy's RBAC, whose policies are CEL conditions too. An
//! expression that fails to evaluate counts as `false` (fail closed). On
//! MCP routes, `tool_scopes` first asks that a tool call's principal hold
//! the scopes its tool needs; lacking one is a scope challenge (RFC 6750
//! §3.1 `insufficient_scope`) rather than a plain refusal.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use cel::common::types::{CelInt, CelList, CelMap, CelMapKey, CelNull, CelString};
use cel::common::value::Val;
use cel::{Context, Env, Program, Value};
use http::{HeaderMap, Method, Uri};
use prometheus_client::metrics::counter::Counter;

use super::auth::Principal;
use super::filter::RequestFacts;
use crate::config::{AuthorizeConfig, compile_rule};
use crate::events::{EventBus, EventKind, HealthEvent, Severity};

/// CEL's standard functions and macros, built once: every evaluation's
/// context shares them.
static STANDARD: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// One compiled expression with its place in the config.
struct Rule {
    /// `require[0]`, `allow[2]`.
    key: String,
    /// The expression as written.
    source: String,
    program: Program,
}

/// Which variables a filter's rules read: only those are built.
#[derive(Clone, Copy, Default)]
struct Reads {
    request: bool,
    source: bool,
    principal: bool,
    mcp: bool,
}

/// An `authorize` filter of a route, with its decisions' counters.
pub struct Authorizer {
    require: Vec<Rule>,
    allow: Vec<Rule>,
    reads: Reads,
    /// The filter's name, for the audit log and events.
    name: String,
    /// The route's position in `routes`.
    route: usize,
    allowed: Counter,
    denied: Counter,
    /// Where denials are published (merged by the bus's cooldown).
    events: Arc<EventBus>,
    /// The scopes a `tools/call` needs, by tool (`*`: the others).
    tool_scopes: BTreeMap<String, Vec<String>>,
    /// `, resource_metadata="…"` for scope challenges, when a `jwt`
    /// filter of the chain names its resource.
    resource_metadata: String,
}

/// What a client is told of a denial.
#[derive(Debug)]
pub struct Refusal {
    /// The filter and the rule's place (`require[0]`), not the rule.
    pub message: String,
    /// A scope challenge (`WWW-Authenticate`), when the call lacked a
    /// scope `tool_scopes` asks for: answered with 403.
    pub challenge: Option<String>,
}

/// What the rules read of a request, borrowed: its variables are built
/// from it for each evaluation, without copying its text.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    method: &'a str,
    uri: &'a Uri,
    host: &'a str,
    tls: bool,
    headers: &'a HeaderMap,
    peer: SocketAddr,
    principal: Option<&'a Principal>,
}

impl<'a> Facts<'a> {
    /// The request `parts` from the client of `facts`, with the principal
    /// an earlier filter found.
    pub fn of(parts: &'a http::request::Parts, facts: &RequestFacts<'a>) -> Self {
        Self {
            method: parts.method.as_str(),
            uri: &parts.uri,
            host: facts.host,
            tls: facts.tls,
            headers: &parts.headers,
            peer: facts.peer,
            principal: parts.extensions.get::<Arc<Principal>>().map(|p| &**p),
        }
    }
}

/// What the rules read of a request on an MCP route, kept for the calls
/// its body carries.
#[derive(Clone)]
pub struct Scope {
    method: Method,
    uri: Uri,
    host: Arc<str>,
    tls: bool,
    headers: HeaderMap,
    peer: SocketAddr,
    principal: Option<Arc<Principal>>,
}

impl Scope {
    /// A copy of what `facts` borrow.
    pub fn of(parts: &http::request::Parts, facts: &RequestFacts<'_>) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            host: facts.host.into(),
            tls: facts.tls,
            headers: parts.headers.clone(),
            peer: facts.peer,
            principal: parts.extensions.get::<Arc<Principal>>().cloned(),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            method: self.method.as_str(),
            uri: &self.uri,
            host: &self.host,
            tls: self.tls,
            headers: &self.headers,
            peer: self.peer,
            principal: self.principal.as_deref(),
        }
    }
}

/// A filter's rules with the variables of the request they judge the
/// calls of.
pub type ScopedRules = (Arc<Authorizer>, Scope);

/// An MCP call as the rules see it: its JSON-RPC method, and the tool or
/// prompt name or resource URI it names.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// `tools/call`, `initialize`, …
    pub method: &'a str,
    /// What `params` names: `name`, or `uri` for resources.
    pub name: Option<&'a str>,
}

impl Authorizer {
    /// The rules of `config` (each compiled at load by validation; one
    /// that does not compile here is left out) for filter `name` of route
    /// number `route`, counting into `allowed` and `denied` and publishing
    /// denials on `events`; scope challenges point at `resource_metadata`
    /// (the URL of the chain's resource's metadata, when it has one).
    pub fn new(
        config: &AuthorizeConfig,
        (name, route): (&str, usize),
        [allowed, denied]: [Counter; 2],
        events: Arc<EventBus>,
        resource_metadata: Option<&str>,
    ) -> Self {
        let compile = |list: &str, rules: &[String]| -> Vec<Rule> {
            rules
                .iter()
                .enumerate()
                .filter_map(|(i, source)| {
                    let program = compile_rule(source).ok()?;
                    Some(Rule {
                        key: format!("{list}[{i}]"),
                        source: source.clone(),
                        program,
                    })
                })
                .collect()
        };
        let (require, allow) = (
            compile("require", &config.require),
            compile("allow", &config.allow),
        );
        let mut reads = Reads::default();
        for rule in require.iter().chain(&allow) {
            let references = rule.program.references();
            reads.request |= references.has_variable("request");
            reads.source |= references.has_variable("source");
            reads.principal |= references.has_variable("principal");
            reads.mcp |= references.has_variable("mcp");
        }
        Self {
            require,
            allow,
            reads,
            name: name.to_owned(),
            route,
            allowed,
            denied,
            events,
            tool_scopes: config.tool_scopes.clone(),
            resource_metadata: resource_metadata
                .map(|url| format!(r#", resource_metadata="{url}""#))
                .unwrap_or_default(),
        }
    }

    /// Judges the request `facts` tell of (`call`: one MCP call of it);
    /// counts and logs the decision (target `switchyard::audit`:
    /// denials at `info` with the rule, the rest at `debug`) and publishes
    /// a denied MCP call as an event (a denied request's event is its
    /// chain's).
    ///
    /// # Errors
    /// What the client is told of a denial.
    pub fn judge(&self, facts: &Facts<'_>, call: Option<Call<'_>>) -> Result<(), Refusal> {
        let (route, filter, client) = (self.route, self.name.as_str(), facts.peer.ip());
        let principal = facts.principal.map_or("", |p| p.id.as_str());
        let (method, name) = call.map_or(("", ""), |c| (c.method, c.name.unwrap_or("")));
        let Err(denied) = self.decide(facts, call) else {
            self.allowed.inc();
            tracing::debug!(target: "switchyard::audit", route, filter, %client, principal, method, name, decision = "allowed");
            return Ok(());
        };
        self.denied.inc();
        let reason = &denied.detail;
        tracing::info!(target: "switchyard::audit", route, filter, %client, principal, method, name, decision = "denied", rule = denied.rule, %reason);
        if call.is_some() {
            let by = facts
                .principal
                .map(|p| format!(" (principal {})", p.id))
                .unwrap_or_default();
            self.events.publish(HealthEvent::new(
                &format!("route {route}"),
                Some(filter),
                EventKind::FilterRefused,
                Severity::Info,
                format!("filter {filter} denied {method} {name} of {client}{by}: {reason}"),
            ));
        }
        let challenge = denied.scopes.map(|scopes| {
            format!(
                r#"Bearer error="insufficient_scope", scope="{scopes}"{}"#,
                self.resource_metadata
            )
        });
        Err(Refusal {
            message: format!("not allowed by filter `{filter}` ({})", denied.rule),
            challenge,
        })
    }

    /// Whether the rules let the caller of `scope` make `call`, counted
    /// and logged by nothing: what a merged list shows the caller.
    pub fn permits(&self, scope: &Scope, call: Call<'_>) -> bool {
        self.decide(&scope.facts(), Some(call)).is_ok()
    }

    /// [`judge`](Self::judge) of a call of the request kept in `scope`.
    ///
    /// # Errors
    /// As [`judge`](Self::judge).
    pub fn judge_call(&self, scope: &Scope, call: Call<'_>) -> Result<(), Refusal> {
        self.judge(&scope.facts(), Some(call))
    }

    /// The decision, unrecorded.
    fn decide(&self, facts: &Facts<'_>, call: Option<Call<'_>>) -> Result<(), Denied> {
        if let Some(needed) = call.and_then(|c| self.missing_scopes(facts.principal, c)) {
            // The challenge asks for the scopes held and those needed: a
            // client replaces its token with the one it is given, which
            // must keep what the old one allowed (the MCP authorization
            // specification's recommended scope challenge).
            let held = facts.principal.map_or(&[][..], |p| &p.scopes[..]);
            let mut asked: Vec<&str> = held.iter().map(String::as_str).collect();
            asked.extend(
                needed
                    .iter()
                    .map(String::as_str)
                    .filter(|scope| !held.iter().any(|h| h == scope)),
            );
            return Err(Denied {
                rule: "tool_scopes".to_owned(),
                detail: format!("the call needs the scopes `{}`", needed.join(" ")),
                scopes: Some(asked.join(" ")),
            });
        }
        if self.require.is_empty() && self.allow.is_empty() {
            return Ok(());
        }
        let mut context = Context::with_env(Arc::clone(&STANDARD));
        if self.reads.request {
            context.add_variable_as_val("request", request_val(facts));
        }
        if self.reads.source {
            context.add_variable_as_val(
                "source",
                map([
                    ("address", text(facts.peer.ip().to_string())),
                    ("port", Box::new(CelInt::from(i64::from(facts.peer.port())))),
                ]),
            );
        }
        if self.reads.principal {
            context.add_variable_as_val(
                "principal",
                facts
                    .principal
                    .map_or_else(|| Box::new(CelNull) as _, principal_val),
            );
        }
        if self.reads.mcp {
            context.add_variable_as_val(
                "mcp",
                call.map_or_else(
                    || Box::new(CelNull) as _,
                    |c| {
                        map([
                            ("method", text(c.method)),
                            ("name", c.name.map_or_else(|| Box::new(CelNull) as _, text)),
                        ])
                    },
                ),
            );
        }
        let holds = |rule: &Rule| {
            let why = match rule.program.execute(&context) {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(Value::Bool(false)) => "is false".to_owned(),
                Ok(other) => format!("gave {other:?}, not a bool"),
                Err(error) => format!("failed: {error}"),
            };
            Err(Denied {
                rule: rule.key.clone(),
                detail: format!("`{}` ({}) {why}", rule.key, rule.source),
                scopes: None,
            })
        };
        for rule in &self.require {
            holds(rule)?;
        }
        if self.allow.is_empty() || self.allow.iter().any(|rule| holds(rule).is_ok()) {
            Ok(())
        } else {
            Err(Denied {
                rule: "allow".to_owned(),
                detail: "no `allow` rule is true".to_owned(),
                scopes: None,
            })
        }
    }

    /// Every scope a `tools/call` of `call` needs (`tool_scopes`), when
    /// `principal` lacks one of them.
    fn missing_scopes(&self, principal: Option<&Principal>, call: Call<'_>) -> Option<&[String]> {
        if call.method != "tools/call" {
            return None;
        }
        let needed = call
            .name
            .and_then(|name| self.tool_scopes.get(name))
            .or_else(|| self.tool_scopes.get("*"))?;
        let held = principal.map_or(&[][..], |p| &p.scopes[..]);
        needed
            .iter()
            .any(|scope| !held.contains(scope))
            .then_some(&needed[..])
    }
}

/// Why a request may not pass.
struct Denied {
    /// The rule's place: `require[0]`, or `allow` when none of them held.
    rule: String,
    /// The rule, and what it gave.
    detail: String,
    /// The scopes to ask for, when the call lacked one: those held, then
    /// those it needs.
    scopes: Option<String>,
}

/// A CEL value of a value.
type Cel<'v> = Box<dyn Val + 'v>;

/// A CEL string, borrowed or owned.
fn text<'v>(s: impl Into<CelString<'v>>) -> Cel<'v> {
    Box::new(s.into())
}

/// A CEL map of `entries`.
fn map<'v, const N: usize>(entries: [(&'static str, Cel<'v>); N]) -> Cel<'v> {
    Box::new(CelMap::from(
        entries
            .into_iter()
            .map(|(k, v)| (CelMapKey::String(CelString::from(k)), v))
            .collect::<HashMap<_, _>>(),
    ))
}

/// `request`: method, path, query, host, scheme and headers (several
/// values of one name joined with `, `).
fn request_val<'v>(facts: &Facts<'v>) -> Cel<'v> {
    let mut headers = HashMap::with_capacity(facts.headers.keys_len());
    for name in facts.headers.keys() {
        let mut values = facts.headers.get_all(name).iter();
        let first = values.next().map_or("", |v| v.to_str().unwrap_or(""));
        let value: Cel<'v> = match values.next() {
            None => text(first),
            Some(second) => {
                let joined = [first, second.to_str().unwrap_or("")]
                    .into_iter()
                    .chain(values.map(|v| v.to_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ");
                text(joined)
            }
        };
        headers.insert(CelMapKey::String(CelString::from(name.as_str())), value);
    }
    map([
        ("method", text(facts.method)),
        ("path", text(facts.uri.path())),
        ("query", text(facts.uri.query().unwrap_or(""))),
        ("host", text(facts.host)),
        ("scheme", text(if facts.tls { "https" } else { "http" })),
        ("headers", Box::new(CelMap::from(headers))),
    ])
}

/// `principal`: id, method, scopes and metadata.
fn principal_val(principal: &Principal) -> Cel<'_> {
    map([
        ("id", text(principal.id.as_str())),
        ("method", text(principal.method)),
        (
            "scopes",
            Box::new(CelList::from(
                principal
                    .scopes
                    .iter()
                    .map(|s| text(s.as_str()))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "metadata",
            Box::new(CelMap::from(
                principal
                    .metadata
                    .iter()
                    .map(|(k, v)| {
                        (
                            CelMapKey::String(CelString::from(k.as_str())),
                            text(v.as_str()),
                        )
                    })
                    .collect::<HashMap<_, _>>(),
            )),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;

    /// Rules as operators write them, to mutate.
    const RULES: &str = "principal != null && 'read' in principal.scopes \
        || request.headers['x-team'].matches('^ops-[0-9]+$') \
        && mcp.name.startsWith('search__') || source.address == '10.0.0.1' \
        && principal.metadata.plan in ['gold', 'silver'] && size(request.path) < 64";

    fn authorizer(rule: &str) -> Authorizer {
        let config = AuthorizeConfig {
            require: vec![rule.to_owned()],
            allow: Vec::new(),
            tool_scopes: BTreeMap::new(),
        };
        let counter = Counter::default;
        let events = Arc::new(EventBus::new(16, std::time::Duration::ZERO));
        Authorizer::new(&config, ("fuzz", 0), [counter(), counter()], events, None)
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text is compiled or refused, never a panic; a rule that
        /// compiles is judged over any request (headers, path, principal
        /// and call of any text) as allowed or denied, never a panic.
        #[test]
        fn any_rule_over_any_request_is_judged_and_never_panics(
            rule in switchyard_fuzzing::mutated(RULES),
            path in "/[ -~]{0,40}",
            header in "[ -~]{0,40}",
            scope in "[ -~]{0,12}",
            name in proptest::option::of("[ -~]{0,20}"),
        ) {
            if crate::config::compile_rule(&rule).is_err() {
                return Ok(());
            }
            let authorizer = authorizer(&rule);
            let mut request = http::Request::builder()
                .uri(http::Uri::builder().path_and_query(format!("/{}", path.trim_start_matches('/').replace(' ', "%20"))).build().unwrap_or_default());
            if let Ok(value) = http::HeaderValue::from_str(&header) {
                request = request.header("x-team", value);
            }
            let (mut parts, ()) = request.body(()).unwrap_or_default().into_parts();
            parts.extensions.insert(Arc::new(Principal {
                id: "fuzz".into(),
                method: "api-key",
                metadata: [("plan".to_owned(), scope.clone())].into(),
                scopes: vec![scope],
            }));
            let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
            let facts = RequestFacts { peer, host: "example.com", port: None, tls: false, route: 0, identity: None };
            let call = Call { method: "tools/call", name: name.as_deref() };
            let _ = authorizer.judge(&Facts::of(&parts, &facts), Some(call));
            let _ = authorizer.judge(&Facts::of(&parts, &facts), None);
        }
    }

    #[test]
    fn rules_read_the_request_the_principal_and_the_call() {
        let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let facts = RequestFacts {
            peer,
            host: "example.com",
            port: None,
            tls: true,
            route: 0,
            identity: None,
        };
        let (mut parts, ()) = http::Request::builder()
            .method("POST")
            .uri("/orders?page=2")
            .header("x-team", "ops")
            .header("accept", "a")
            .header("accept", "b")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(Arc::new(Principal {
            id: "ann".into(),
            method: "jwt",
            metadata: [("iss".to_owned(), "https://id".to_owned())].into(),
            scopes: vec!["read".into()],
        }));
        let call = Call {
            method: "tools/call",
            name: Some("search__answer"),
        };
        for (rule, holds) in [
            (
                "request.method == 'POST' && request.path == '/orders'",
                true,
            ),
            (
                "request.query == 'page=2' && request.scheme == 'https'",
                true,
            ),
            ("request.headers['accept'] == 'a, b'", true),
            ("request.host == 'example.com' && source.port == 4000", true),
            (
                "principal.id == 'ann' && principal.metadata.iss == 'https://id'",
                true,
            ),
            (
                "'read' in principal.scopes && !('write' in principal.scopes)",
                true,
            ),
            (
                "mcp.method == 'tools/call' && mcp.name.startsWith('search__')",
                true,
            ),
            ("request.headers['x-missing'] == 'x'", false),
            ("principal.id", false),
        ] {
            let judged = authorizer(rule).judge(&Facts::of(&parts, &facts), Some(call));
            assert_eq!(judged.is_ok(), holds, "{rule}: {judged:?}");
        }
    }
}
