//! Authorization by rules: an `authorize` filter's CEL expressions judged
//! over the request, its principal and, on MCP routes, each JSON-RPC call
//! (the variables are those of [`AuthorizeConfig`]). A request passes when
//! every `require` expression is `true` and, when `allow` lists any, one
//! of them is — Envoy's RBAC, whose policies are CEL conditions too. An
//! expression that fails to evaluate counts as `false` (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};
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
}

/// The variables of one request the rules read, built once per request
/// (on an MCP route, every call of the request shares them).
#[derive(Clone)]
pub struct Scope {
    request: Value,
    source: Value,
    principal: Value,
    /// The principal's id, for the audit log.
    who: Option<Arc<str>>,
    /// The client's address, for the audit log.
    client: std::net::IpAddr,
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
    /// denials on `events`.
    pub fn new(
        config: &AuthorizeConfig,
        name: &str,
        route: usize,
        [allowed, denied]: [Counter; 2],
        events: Arc<EventBus>,
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
        }
    }

    /// The variables the rules read of the request `parts` (with the
    /// principal an earlier filter found) from the client of `facts`.
    pub fn scope(&self, parts: &http::request::Parts, facts: &RequestFacts<'_>) -> Scope {
        let principal = parts.extensions.get::<Arc<Principal>>();
        Scope {
            request: if self.reads.request {
                request_value(parts, facts)
            } else {
                Value::Null
            },
            source: if self.reads.source {
                map([
                    ("address", facts.peer.ip().to_string().into()),
                    ("port", Value::Int(facts.peer.port().into())),
                ])
            } else {
                Value::Null
            },
            principal: match principal {
                Some(p) if self.reads.principal => principal_value(p),
                _ => Value::Null,
            },
            who: principal.map(|p| Arc::from(p.id.as_str())),
            client: facts.peer.ip(),
        }
    }

    /// Judges a request (`call`: one MCP call of it) whose variables are
    /// `scope`; counts and logs the decision (target `switchyard::audit`:
    /// denials at `info` with the rule, the rest at `debug`) and publishes
    /// a denied MCP call as an event (a denied request's event is its
    /// chain's).
    ///
    /// # Errors
    /// What the client is told of a denial: the filter and the rule's
    /// place (`require[0]`), not the rule itself.
    pub fn judge(&self, scope: &Scope, call: Option<Call<'_>>) -> Result<(), String> {
        let (route, filter, client) = (self.route, self.name.as_str(), scope.client);
        let principal = scope.who.as_deref().unwrap_or("");
        let (method, name) = call.map_or(("", ""), |c| (c.method, c.name.unwrap_or("")));
        let Err(denied) = self.decide(scope, call) else {
            self.allowed.inc();
            tracing::debug!(target: "switchyard::audit", route, filter, %client, principal, method, name, decision = "allowed");
            return Ok(());
        };
        self.denied.inc();
        let reason = &denied.detail;
        tracing::info!(target: "switchyard::audit", route, filter, %client, principal, method, name, decision = "denied", rule = denied.rule, %reason);
        if call.is_some() {
            let by = scope
                .who
                .as_deref()
                .map(|p| format!(" (principal {p})"))
                .unwrap_or_default();
            self.events.publish(HealthEvent::new(
                &format!("route {route}"),
                Some(filter),
                EventKind::FilterRefused,
                Severity::Info,
                format!("filter {filter} denied {method} {name} of {client}{by}: {reason}"),
            ));
        }
        Err(format!(
            "not allowed by filter `{filter}` ({})",
            denied.rule
        ))
    }

    /// Whether the rules let the caller of `scope` make `call`, counted
    /// and logged by nothing: what a merged list shows the caller.
    pub fn permits(&self, scope: &Scope, call: Call<'_>) -> bool {
        self.decide(scope, Some(call)).is_ok()
    }

    /// The decision, unrecorded.
    fn decide(&self, scope: &Scope, call: Option<Call<'_>>) -> Result<(), Denied> {
        let mut context = Context::with_env(Arc::clone(&STANDARD));
        context.add_variable_from_value("request", scope.request.clone());
        context.add_variable_from_value("source", scope.source.clone());
        context.add_variable_from_value("principal", scope.principal.clone());
        context.add_variable_from_value(
            "mcp",
            call.map_or(Value::Null, |c| {
                map([
                    ("method", c.method.into()),
                    ("name", c.name.map_or(Value::Null, Value::from)),
                ])
            }),
        );
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
            })
        }
    }
}

/// Why a request may not pass.
struct Denied {
    /// The rule's place: `require[0]`, or `allow` when none of them held.
    rule: String,
    /// The rule, and what it gave.
    detail: String,
}

/// A CEL map of `entries`.
fn map<const N: usize>(entries: [(&'static str, Value); N]) -> Value {
    Value::Map(Map {
        map: Arc::new(
            entries
                .into_iter()
                .map(|(k, v)| (Key::from(k), v))
                .collect(),
        ),
    })
}

/// `request`: method, path, query, host, scheme and headers.
fn request_value(parts: &http::request::Parts, facts: &RequestFacts<'_>) -> Value {
    let mut headers: HashMap<Key, Value> = HashMap::with_capacity(parts.headers.keys_len());
    for name in parts.headers.keys() {
        let mut values = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let first = values.next().unwrap_or_default().into_owned();
        let joined = values.fold(first, |mut all, v| {
            all.push_str(", ");
            all.push_str(&v);
            all
        });
        headers.insert(Key::from(name.as_str()), joined.into());
    }
    map([
        ("method", parts.method.as_str().into()),
        ("path", parts.uri.path().into()),
        ("query", parts.uri.query().unwrap_or("").into()),
        ("host", facts.host.into()),
        ("scheme", if facts.tls { "https" } else { "http" }.into()),
        (
            "headers",
            Value::Map(Map {
                map: Arc::new(headers),
            }),
        ),
    ])
}

/// `principal`: id, method, scopes and metadata.
fn principal_value(principal: &Principal) -> Value {
    map([
        ("id", principal.id.as_str().into()),
        ("method", principal.method.into()),
        (
            "scopes",
            Value::List(Arc::new(
                principal.scopes.iter().map(|s| s.as_str().into()).collect(),
            )),
        ),
        (
            "metadata",
            Value::Map(Map {
                map: Arc::new(
                    principal
                        .metadata
                        .iter()
                        .map(|(k, v)| (Key::from(k.as_str()), v.as_str().into()))
                        .collect(),
                ),
            }),
        ),
    ])
}
