//! Filters: named steps a route applies to its requests and responses,
//! declared once under `[filters.NAME]` and listed in order on routes
//! (`filters = ["strip-api", "security-headers"]`), as Traefik's
//! middlewares and Envoy's route actions.
//!
//! ```toml
//! [filters.strip-api]
//! kind = "strip-prefix"
//! prefix = "/api"
//!
//! [filters.tag]
//! kind = "request-headers"
//! set = { "x-client-ip" = "{client_ip}" }
//! remove = ["cookie"]
//!
//! [[routes]]
//! match = { path_prefix = "/api" }
//! pool = "web"
//! filters = ["strip-api", "tag"]
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::types::Invalid;

/// One filter: its `kind` and the settings of that kind. Request steps run
/// in the route's order before the route's target is asked; response steps
/// run on the answer, whether the target's or one a filter made.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FilterConfig {
    /// Removes a prefix from the path (Traefik's StripPrefix; Envoy's
    /// `prefix_rewrite` to `/`): `/api/users` → `/users`, `/api` → `/`. A
    /// path without the prefix passes unchanged; the prefix matches whole
    /// segments only (`/api` does not strip `/apix`).
    StripPrefix(PrefixConfig),
    /// Puts a prefix before the path (Traefik's AddPrefix): `/users` →
    /// `/v1/users`.
    AddPrefix(PrefixConfig),
    /// Replaces the parts of the path that `pattern` matches with
    /// `substitution`, `$1`/`${name}` naming captures (Envoy's
    /// `regex_rewrite`, Traefik's ReplacePathRegex; the `regex` crate's
    /// syntax). The query stays as it was.
    RegexRewrite(RegexRewriteConfig),
    /// Sends `host` as the upstream request's `Host` (Envoy's
    /// `host_rewrite_literal`, nginx's `proxy_set_header Host`).
    HostRewrite(HostRewriteConfig),
    /// Changes the headers of the request sent upstream (Envoy's
    /// `request_headers_to_add`/`_remove`, nginx's `proxy_set_header`).
    RequestHeaders(HeaderRules),
    /// Changes the headers of the response sent to the client (Envoy's
    /// `response_headers_to_add`/`_remove`, nginx's `add_header`).
    ResponseHeaders(HeaderRules),
    /// Answers with a redirect instead of serving (Envoy's `redirect`
    /// action, nginx's `return 301`): any of scheme, host, port and path
    /// replaced in the request's URL.
    Redirect(RedirectConfig),
    /// Answers with a fixed response instead of serving (Envoy's
    /// `direct_response`, nginx's `return`).
    Respond(RespondConfig),
    /// Admits or refuses clients by address (nginx's `allow`/`deny`,
    /// Traefik's IPAllowList): 403 for a refused client.
    IpFilter(IpFilterConfig),
    /// Cross-origin resource sharing per the Fetch standard (Envoy's and
    /// Traefik's CORS): a preflight from an allowed origin is answered at
    /// the gateway, and answers to allowed origins carry the
    /// `Access-Control-Allow-*` headers and `Vary: Origin`.
    Cors(CorsConfig),
    /// Compresses answers for clients that accept it (nginx's `gzip`,
    /// Envoy's compressor filter): the first of `algorithms` the request's
    /// `Accept-Encoding` takes (RFC 9110 §12.5.3, `q=0` refuses), for
    /// answers of the listed content types and at least `min_bytes`; never
    /// an answer already encoded, a partial one (206, `Content-Range`), a
    /// HEAD's, a 204/304, or one whose `Cache-Control` says `no-transform`.
    Compress(CompressConfig),
    /// Decides which forwarding headers reach the upstream
    /// (`X-Forwarded-For`/`-Proto`/`-Host`, `Forwarded` of RFC 7239): a
    /// client that is not one of `trusted_proxies` has the ones it sent
    /// removed, so the upstream sees only what Switchyard vouches for
    /// (Envoy's `xff_num_trusted_hops`, nginx's `set_real_ip_from`); then
    /// Switchyard adds its hop — the client's address to
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, the `Host` the client asked
    /// for as `X-Forwarded-Host` when none was kept, and, with `forwarded`,
    /// a `Forwarded` element.
    Forwarded(ForwardedConfig),
    /// Gives every request an id, sent upstream and back to the client in
    /// `header` (nginx's `$request_id`, Envoy's `x-request-id`): the
    /// client's own when it sent one and `keep` is on, else 32 random hex
    /// digits.
    RequestId(RequestIdConfig),
    /// Refuses requests with more header fields, or more header bytes,
    /// than the route takes, with 431 (RFC 6585 §5; nginx's
    /// `large_client_header_buffers`, Envoy's `max_headers_count`).
    HeaderLimit(HeaderLimitConfig),
    /// Refuses request bodies larger than `max_bytes` with 413, before any
    /// byte past the limit reaches a pool (nginx's `client_max_body_size`):
    /// at once when `Content-Length` says so, else when the body grows
    /// past it.
    BodyLimit(BodyLimitConfig),
    /// Decodes request bodies whose `Content-Encoding` is one of
    /// `algorithms` before they go upstream (Envoy's decompressor filter
    /// on requests): the header and `Content-Length` removed, the body
    /// streamed decoded, at most `max_decoded_bytes` of it (413 past it:
    /// a decompression bomb's bound), 400 for bytes that do not decode.
    /// A body in another coding, or in several, passes as it is. Off
    /// unless a route lists it.
    Decompress(DecompressConfig),
    /// A `filter-plugin` component (WIT 0.1.3): sees the request (the
    /// headers it asks for), and answers continue, change (path, headers)
    /// or respond; it may see the answer, and on MCP routes each JSON-RPC
    /// call and result (deny, rewrite the arguments, redact the result).
    /// Sandboxed as every plugin; what a fault costs the request is
    /// `failure_mode`.
    Plugin(PluginFilterConfig),
    /// Authenticates requests by API key (Kong's key-auth, Envoy's
    /// `api_key_auth`, agentgateway's `apiKey`): the key from `header` (or
    /// the opt-in `query` parameter) names a principal, whose id then
    /// reaches header templates as `{principal}`; the key itself never
    /// goes upstream. Keys are stored only as SHA-256 digests. A route may
    /// list several authentication filters: the first that finds a
    /// principal wins, and the later ones pass.
    ApiKey(ApiKeyConfig),
    /// Takes the client certificate the listener verified (mTLS) as the
    /// principal: its first subject alternative name (a SPIFFE id, a DNS
    /// name) is the principal's id. Without a verified certificate,
    /// `required` answers 403 (nginx's `$ssl_client_verify` check: no
    /// HTTP challenge can ask for a certificate), `optional` goes on.
    ClientCert(ClientCertConfig),
    /// Authenticates requests by a JWT bearer token (RFC 7519, in
    /// `Authorization: Bearer`; Envoy's `jwt_authn`, agentgateway's
    /// `jwtAuth`): its signature checked against its issuer's JWKS
    /// (RFC 7517), `iss`, `aud`, `exp` and `nbf` checked with
    /// `clock_skew_s`; the principal is its `principal_claim`, its scopes
    /// the `scope` (RFC 8693 §4.2) or `scp` claim. Asymmetric algorithms
    /// (RS, PS, ES, EdDSA); HMAC only for a provider that opts in with
    /// `hmac`; `alg: none` refused.
    Jwt(JwtConfig),
    /// Decides which requests may pass by CEL expressions (the Common
    /// Expression Language; Envoy's RBAC with CEL conditions,
    /// agentgateway's authorization rules) over the request, its
    /// principal and, on MCP routes, each JSON-RPC call: every `require`
    /// expression must be true, and one of `allow`'s when it lists any.
    /// A refused request gets 403 (a JSON-RPC error on MCP routes), and an
    /// MCP route's merged lists leave out what the caller may not call.
    Authorize(AuthorizeConfig),
    /// Asks an HTTP service whether a request may pass (nginx's
    /// `auth_request`, Traefik's ForwardAuth, Envoy's HTTP `ext_authz`):
    /// a GET to `url` with the request's chosen headers and
    /// `X-Forwarded-Method`/`-Proto`/`-Host`/`-Uri`/`-For`. A 2xx answer
    /// lets it pass, with the answer's chosen headers (and principal);
    /// any other answer goes back to the client as it is (status,
    /// headers, body) and the request goes no further.
    ForwardAuth(ForwardAuthConfig),
    /// Limits the rate of requests per key (Envoy's local rate limit,
    /// nginx's `limit_req`, Traefik's RateLimit, Kong's rate-limiting):
    /// named limits, each `rate` per `period_ms` with a `burst`, keyed by
    /// the client's address, the principal, a header, a claim or the
    /// route (GCRA: no window edge that lets twice the rate through). A
    /// request over a limit gets 429 with `Retry-After` and the
    /// `RateLimit-Policy`/`RateLimit` fields of the IETF draft
    /// (draft-ietf-httpapi-ratelimit-headers); a `shadow` limit only
    /// counts.
    RateLimit(crate::rate_limit::RateLimitConfig),
}

/// A `jwt` filter.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `required` (the default) or `optional` (a request without a token
    /// goes on; a bad token is 401 either way).
    #[serde(default)]
    pub mode: AuthMode,
    /// The issuers whose tokens are taken; at least one.
    pub providers: Vec<JwtProvider>,
    /// Leeway on `exp` and `nbf`, seconds. Default 60 (Envoy's).
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// The protected resource the filter guards, as OAuth 2.0 clients
    /// know it: its canonical URI (`https://gw.example.com/mcp`; the MCP
    /// authorization specification's resource server). With it, every
    /// listener serves the resource's Protected Resource Metadata
    /// (RFC 9728) at `/.well-known/oauth-protected-resource` followed by
    /// the URI's path, naming the providers' issuers as its authorization
    /// servers, and the filter's 401 challenges point at it
    /// (`resource_metadata`, and `scope` with `scopes_supported`). Every
    /// provider's `audiences` must list it (RFC 8707: a token for another
    /// resource is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The scopes the resource's metadata lists and its challenges ask
    /// for. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
}

impl JwtConfig {
    /// Where the resource's metadata is served, when the filter names a
    /// `resource`: the path (`/.well-known/oauth-protected-resource/mcp`)
    /// and the whole URL (RFC 9728 §3.1: the well-known segment inserted
    /// between the URI's origin and path).
    pub fn resource_metadata(&self) -> Option<(String, String)> {
        let resource: http::Uri = self.resource.as_deref()?.parse().ok()?;
        let path = match resource.path() {
            "/" | "" => String::new(),
            path => path.trim_end_matches('/').to_owned(),
        };
        let path = format!("/.well-known/oauth-protected-resource{path}");
        let origin = format!(
            "{}://{}",
            resource.scheme_str()?,
            resource.authority()?.as_str()
        );
        Some((path.clone(), format!("{origin}{path}")))
    }
}

fn default_clock_skew_s() -> u64 {
    60
}

/// An issuer of a `jwt` filter.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// The `aud` values taken (a token for another resource is refused);
    /// at least one.
    pub audiences: Vec<String>,
    /// Its signing keys: a JWKS document (RFC 7517 §5) as JSON text, or
    /// `jwks_file`, or `jwks_url`: one of the three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// A file holding its JWKS document; relative to the config file. Read
    /// at load and at every reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Where its JWKS document is served (`http://` or `https://`: an
    /// OpenID provider's `jwks_uri`). Fetched over Switchyard's own
    /// upstream connections when the filter loads, again every
    /// `jwks_refresh_s`, and at once for a token signed with a key it
    /// does not know (at most once a second; a `kid` still unknown after
    /// that is not fetched for again for a minute). A failed fetch keeps
    /// the keys last fetched, and is tried again sooner (1 s, doubling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again, seconds. Default 300.
    #[serde(default = "default_jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    /// Whether tokens signed with a shared secret (HS256, HS384, HS512)
    /// are taken: verified with the `oct` keys (RFC 7518 §6.4) of its
    /// `jwks_file` — never inline `jwks`, which the admin API shows and
    /// the config store shares, nor `jwks_url` — each at least as long as
    /// its hash (RFC 7518 §3.2: 32 bytes for HS256). Default `false`, as
    /// Envoy's and agentgateway's JWT filters take asymmetric keys unless
    /// told: whoever holds a secret that verifies tokens can also sign
    /// them, for any principal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hmac: bool,
    /// The claim naming the principal. Default `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Request headers set from claims (`{ "x-tenant" = "tenant" }`): a
    /// string or number claim's value; the client's own header of that
    /// name is removed either way.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
}

impl JwtProvider {
    /// Its JWKS document: `jwks`, or the text of `jwks_file`.
    ///
    /// # Errors
    /// Why the file cannot be read.
    pub fn jwks_text(&self) -> Result<String, String> {
        match (&self.jwks, &self.jwks_file) {
            (Some(jwks), _) => Ok(jwks.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|e| format!("`{}`: {e}", path.display()))
            }
            (None, None) => Err("no `jwks` nor `jwks_file`".into()),
        }
    }
}

fn default_jwks_refresh_s() -> u64 {
    300
}

fn default_principal_claim() -> String {
    "sub".into()
}

/// The verifying keys of a JWKS document (JSON text), each with its `kid`
/// and algorithm, as a `jwt` filter uses them; `hmac`: whether `oct`
/// (shared secret) keys are taken too.
///
/// # Errors
/// Why `text` is not a JWKS with at least one usable key: an HMAC key
/// without `hmac`, or a secret shorter than its hash.
pub fn parse_jwks(
    text: &str,
    hmac: bool,
) -> Result<
    Vec<(
        Option<String>,
        jsonwebtoken::Algorithm,
        jsonwebtoken::DecodingKey,
    )>,
    String,
> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
    use jsonwebtoken::{Algorithm, DecodingKey};
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(alg), _) => Algorithm::from_str(&alg.to_string())
                .map_err(|_| format!("keys[{i}]: algorithm `{alg}` is not one a token may use"))?,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("keys[{i}]: curve {:?} is not supported", ec.curve)),
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, AlgorithmParameters::OctetKey(_)) if hmac => Algorithm::HS256,
            (None, _) => {
                return Err(format!(
                    "keys[{i}]: a symmetric (HMAC) or unknown key type is not taken (HMAC: `hmac = true`, the keys in `jwks_file`)"
                ));
            }
        };
        let hash_bytes = match algorithm {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 0,
        };
        if hash_bytes > 0 {
            if !hmac {
                return Err(format!(
                    "keys[{i}]: HMAC (`{algorithm:?}`) is not taken (opt in with `hmac = true`, the keys in `jwks_file`)"
                ));
            }
            let AlgorithmParameters::OctetKey(secret) = &jwk.algorithm else {
                return Err(format!("keys[{i}]: `{algorithm:?}` needs an `oct` key"));
            };
            // Base64url without padding: 6 bits a character.
            let bytes = secret.value.trim_end_matches('=').len() * 6 / 8;
            if bytes < hash_bytes {
                return Err(format!(
                    "keys[{i}]: a {bytes}-byte secret is too short for `{algorithm:?}` (at least {hash_bytes}, RFC 7518 §3.2)"
                ));
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    if keys.is_empty() {
        return Err("the JWKS has no keys".into());
    }
    Ok(keys)
}

/// An `authorize` filter: CEL expressions (<https://cel.dev>) that read
///
/// - `request`: `method`, `path` (without the query), `query` (without
///   `?`, `""` when none), `host` (without port), `scheme` (`http` or
///   `https`), `headers` (a map from lower-case name to value, several
///   values joined with `, `);
/// - `source`: `address` (the peer's IP address, text) and `port`;
/// - `principal`: `null` when no authentication filter found one, else
///   `id`, `method` (`api-key`, `jwt`, `client-cert`), `scopes` (a list)
///   and `metadata` (a map of text: an API key principal's metadata, a
///   JWT's claims of text, number or boolean — a required claim is
///   `has(principal.metadata.tenant)`);
/// - `mcp`: on MCP routes, the JSON-RPC call judged: `method`
///   (`tools/call`, `initialize`, …) and `name` (the tool or prompt
///   name, the resource URI; `null` for other methods); `null` on other
///   routes.
///
/// ```toml
/// [filters.who-may-call]
/// kind = "authorize"
/// require = ["principal != null"]
/// allow = [
///   "mcp.method != 'tools/call'",
///   "'tools:' + mcp.name in principal.scopes",
/// ]
/// ```
///
/// A request passes when every `require` expression is `true` and, when
/// `allow` lists any, one of them is; an expression that fails (a missing
/// key, a type mismatch) counts as `false`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizeConfig {
    /// Expressions that must all be `true`.
    pub require: Vec<String>,
    /// Expressions of which one must be `true` (none listed: no such
    /// condition).
    pub allow: Vec<String>,
    /// On MCP routes, the scopes a `tools/call` needs, by the tool's name
    /// as clients see it (`*`: any tool not listed). A caller whose
    /// principal lacks one of them gets 403 with `WWW-Authenticate:
    /// Bearer error="insufficient_scope", scope="…"` naming the scopes it
    /// holds and those the call needs (RFC 6750 §3.1; the MCP
    /// authorization specification's scope challenge, whose recommended
    /// form keeps what the client holds, so that the token it asks for
    /// in their place loses nothing), and does not see the tool in
    /// `tools/list`. Default none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_scopes: BTreeMap<String, Vec<String>>,
}

/// The variables an `authorize` expression may read.
const RULE_VARIABLES: [&str; 4] = ["request", "source", "principal", "mcp"];

/// Compiles the CEL expression `source` of an `authorize` filter.
///
/// # Errors
/// The parser's message, or the name of a variable that is not one of
/// `request`, `source`, `principal` or `mcp`.
pub fn compile_rule(source: &str) -> Result<cel::Program, String> {
    let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
    let mut bound = Vec::new();
    if let Some(unknown) = unknown_variable(program.expression(), &mut bound) {
        return Err(format!(
            "`{unknown}` is not a variable here (they are {})",
            RULE_VARIABLES.join(", ")
        ));
    }
    Ok(program)
}

/// The first name `expr` reads that is neither one of `RULE_VARIABLES`
/// nor bound by a macro around it (`s` in `scopes.exists(s, …)`).
fn unknown_variable<'e>(expr: &'e cel::IdedExpr, bound: &mut Vec<&'e str>) -> Option<&'e str> {
    use cel::common::ast::{EntryExpr, Expr};
    match &expr.expr {
        Expr::Ident(name) => (!name.starts_with('@')
            && !RULE_VARIABLES.contains(&name.as_str())
            && !bound.contains(&name.as_str()))
        .then_some(name.as_str()),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| &**t)
            .chain(&call.args)
            .find_map(|e| unknown_variable(e, bound)),
        Expr::Comprehension(c) => {
            let outer = bound.len();
            bound.extend([c.iter_var.as_str(), c.accu_var.as_str()]);
            bound.extend(c.iter_var2.as_deref());
            let found = [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter()
            .find_map(|e| unknown_variable(e, bound));
            bound.truncate(outer);
            found
        }
        Expr::List(list) => list
            .elements
            .iter()
            .find_map(|e| unknown_variable(e, bound)),
        Expr::Map(cel::common::ast::MapExpr { entries })
        | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => {
            entries.iter().find_map(|entry| match &entry.expr {
                EntryExpr::StructField(field) => unknown_variable(&field.value, bound),
                EntryExpr::MapEntry(entry) => unknown_variable(&entry.key, bound)
                    .or_else(|| unknown_variable(&entry.value, bound)),
            })
        }
        Expr::Select(select) => unknown_variable(&select.operand, bound),
        Expr::Literal(_) | Expr::Unspecified => None,
    }
}

impl AuthorizeConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.require.is_empty() && self.allow.is_empty() && self.tool_scopes.is_empty() {
            return Err((
                "require".into(),
                "give `require` or `allow` rules, or `tool_scopes`".into(),
            ));
        }
        for (tool, scopes) in &self.tool_scopes {
            check_scopes(&format!("tool_scopes.{tool}"), scopes)?;
        }
        for (list, rules) in [("require", &self.require), ("allow", &self.allow)] {
            for (i, rule) in rules.iter().enumerate() {
                compile_rule(rule).map_err(|reason| (format!("{list}[{i}]"), reason))?;
            }
        }
        Ok(())
    }
}

/// A `forward-auth` filter: the service to ask, what it sees of the
/// request and what of its answer goes upstream.
///
/// ```toml
/// [filters.sso]
/// kind = "forward-auth"
/// url = "http://127.0.0.1:9000/verify"
/// request_headers = ["authorization", "cookie"]
/// response_headers = ["x-user"]
/// principal_header = "x-user"
/// cache_ttl_ms = 30000
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The service: an `http://` or `https://` URL, its path and query
    /// those of every sub-request (a GET). Asked over Switchyard's own
    /// kept-alive upstream connections.
    pub url: String,
    /// Request headers copied onto the sub-request. Default
    /// `["authorization", "cookie"]`.
    #[serde(default = "default_forward_auth_request_headers")]
    pub request_headers: Vec<String>,
    /// Headers of a 2xx answer set on the request sent upstream (a
    /// client's own headers of those names are removed either way).
    /// Default none.
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// A header of the 2xx answer naming the principal (`{principal}`,
    /// `principal.id` of rules), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_header: Option<String>,
    /// How long the service has to answer, head and body, ms. Default
    /// 1000.
    #[serde(default = "default_forward_auth_timeout_ms")]
    pub timeout_ms: u64,
    /// What a request gets when the service gives no answer (cannot be
    /// reached, times out): `closed` (the default) answers 503, `open`
    /// lets it pass without the service's headers.
    #[serde(default = "closed")]
    pub failure_mode: FilterFailureMode,
    /// How long an answer is remembered, ms, keyed by the values of
    /// `request_headers` (so the service must decide on those alone:
    /// keep 0 for one that reads the method or path). Default 0: the
    /// service is asked for every request. At most 10,000 are kept.
    #[serde(default)]
    pub cache_ttl_ms: u64,
}

fn default_forward_auth_request_headers() -> Vec<String> {
    vec!["authorization".into(), "cookie".into()]
}

fn default_forward_auth_timeout_ms() -> u64 {
    1000
}

fn closed() -> FilterFailureMode {
    FilterFailureMode::Closed
}

impl ForwardAuthConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_url(&self.url).map_err(|reason| ("url".to_string(), reason))?;
        for (list, names) in [
            ("request_headers", &self.request_headers),
            ("response_headers", &self.response_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                check_header(&format!("{list}[{i}]"), name, None)?;
            }
        }
        if let Some(name) = &self.principal_header {
            check_header("principal_header", name, None)?;
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms".into(), "must be ≥ 1".into()));
        }
        Ok(())
    }
}

/// A `client-cert` filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertConfig {
    /// `required` (the default) or `optional`.
    pub mode: AuthMode,
}

/// An `api-key` filter: where the key is, whether one is required, and
/// the principals with their keys.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The request header carrying the key. Default `x-api-key`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// A query parameter carrying the key, when set (off by default: a key
    /// in a URL ends up in logs and browser histories).
    #[serde(default)]
    pub query: Option<String>,
    /// `required` (the default): a request without a key is answered 401;
    /// `optional`: it goes on without a principal. A key that names no
    /// principal is 401 either way.
    #[serde(default)]
    pub mode: AuthMode,
    /// The principals and their keys; at least one.
    pub principals: Vec<ApiKeyPrincipal>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// Whether an authentication filter requires credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// A request without credentials is answered 401 (`WWW-Authenticate`).
    #[default]
    Required,
    /// A request without credentials goes on without a principal (a later
    /// filter may authenticate it); bad credentials are still 401.
    Optional,
}

/// A principal of an `api-key` filter.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyPrincipal {
    /// Its id (unique in the filter): `{principal}` in header templates.
    pub id: String,
    /// The SHA-256 digests of its keys, `sha256:` and 64 lower-case hex
    /// digits (`switchyard api-key new` makes a key and its digest);
    /// several for a rotation's overlap. At least one.
    pub keys: Vec<String>,
    /// What else is known of it (team, plan), for later filters and logs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The scopes it holds.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The 32 bytes of a `sha256:` digest as an `api-key` filter stores it.
///
/// # Errors
/// Why `text` is not `sha256:` and 64 lower-case hex digits.
pub fn parse_key_digest(text: &str) -> Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .ok_or_else(|| format!("`{text}` is not `sha256:` and 64 hex digits"))?;
    let mut digest = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => digest[i] = high << 4 | low,
            _ => {
                return Err(format!(
                    "`{text}` is not `sha256:` and 64 lower-case hex digits"
                ));
            }
        }
    }
    Ok(digest)
}

/// A filter plugin and what its faults cost.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginFilterConfig {
    /// The `filter-plugin` component and its limits.
    pub plugin: super::PluginRef,
    /// What a request gets when the plugin faults (a trap, an overrun, a
    /// nonsense answer, or quarantine). Default `open`.
    #[serde(default)]
    pub failure_mode: FilterFailureMode,
}

/// What a request gets when its filter plugin faults: Envoy's
/// `failure_mode_allow` of its external filters, as a choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FilterFailureMode {
    /// The request goes on as if the filter were not there (a guard that
    /// must not cost availability). The default.
    #[default]
    Open,
    /// The request is refused: 503 with a JSON error, or a JSON-RPC error
    /// on an MCP call (a guard that must hold).
    Closed,
}

/// A path prefix to strip or add.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    /// The prefix: starts with `/`, does not end with one (`/api`).
    pub prefix: String,
}

/// A path rewrite by regular expression.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexRewriteConfig {
    /// What to replace (every match), in the `regex` crate's syntax.
    pub pattern: String,
    /// What to put in its place; `$1` or `${name}` insert captures. The
    /// result must start with `/`.
    pub substitution: String,
}

/// The upstream `Host`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRewriteConfig {
    /// The host (and optional `:port`) sent upstream.
    pub host: String,
}

/// Header changes, applied in this order: `remove`, then `set`, then `add`.
/// Values may use the variables of [`Variable`] (`{client_ip}`); `{{` and
/// `}}` are literal braces.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRules {
    /// Headers removed (by name, case-insensitive).
    pub remove: Vec<String>,
    /// Headers replaced: any value the header had is dropped.
    pub set: BTreeMap<String, String>,
    /// Headers appended: values the header had are kept.
    pub add: BTreeMap<String, String>,
}

/// A redirect; what is not given is the request's own.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// `http` or `https`. Default: the request's.
    #[serde(default)]
    pub scheme: Option<String>,
    /// The host. Default: the request's.
    #[serde(default)]
    pub host: Option<String>,
    /// The port, 1..=65535. Default: none when the scheme or host is given
    /// (the scheme's own port), else the request's.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// The path, starting with `/`. Default: the request's.
    #[serde(default)]
    pub path: Option<String>,
    /// Drop the query. Default false (kept).
    #[serde(default)]
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308. Default 301.
    #[serde(default = "default_redirect_status")]
    #[schema(minimum = 301, maximum = 308)]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    301
}

/// A fixed response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code, 200..=599. Default 200.
    #[serde(default = "default_respond_status")]
    #[schema(minimum = 200, maximum = 599)]
    pub status: u16,
    /// Body. Default empty.
    #[serde(default)]
    pub body: String,
    /// `Content-Type`. Default `text/plain; charset=utf-8`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Other headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_respond_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".into()
}

/// Which client addresses may use the route. A client in `deny` is
/// refused; otherwise, when `allow` is given, only a client in it is
/// admitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IpFilterConfig {
    /// Addresses or CIDR blocks admitted (`10.0.0.0/8`, `::1`). Default:
    /// every address.
    pub allow: Vec<String>,
    /// Addresses or CIDR blocks refused. Default: none.
    pub deny: Vec<String>,
    /// Proxies in front of Switchyard whose `X-Forwarded-For` is believed:
    /// when the connection comes from one, the client is the rightmost
    /// address of `X-Forwarded-For` that is not a trusted proxy (nginx's
    /// `set_real_ip_from` with `real_ip_recursive on`). Default: none (the
    /// connection's address is the client).
    pub trusted_proxies: Vec<String>,
}

/// Forwarding headers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardedConfig {
    /// Addresses or CIDR blocks of the proxies in front of Switchyard
    /// whose forwarding headers are kept. Default: none (every client's
    /// are removed).
    pub trusted_proxies: Vec<String>,
    /// Also send `Forwarded: for=…;proto=…;host=…` (RFC 7239). Default
    /// false.
    pub forwarded: bool,
}

/// Bounds on a request's header fields.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderLimitConfig {
    /// Header fields at most (each repeated field counts). Default 100.
    pub max_headers: u64,
    /// Bytes of names and values at most, all fields together. Default
    /// 16384.
    pub max_header_bytes: u64,
}

impl Default for HeaderLimitConfig {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 16_384,
        }
    }
}

/// The request id header.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The header. Default `x-request-id`.
    pub header: String,
    /// Keep an id the client sent (a well-formed header value of at most
    /// 128 bytes); off: always a new one. Default true.
    pub keep: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header: "x-request-id".into(),
            keep: true,
        }
    }
}

/// Response compression.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompressConfig {
    /// Encodings offered, in the order preferred among those the client
    /// accepts: `zstd`, `br`, `gzip`. Default all three, in that order.
    pub algorithms: Vec<String>,
    /// Smallest answer compressed, bytes (by its `Content-Length`; an
    /// answer without one is compressed). Default 1024.
    pub min_bytes: u64,
    /// Media types compressed: exact (`application/json`) or a type with
    /// `/*` (`text/*`). Default: `text/*`, `application/json`,
    /// `application/javascript`, `application/xml`, `image/svg+xml`.
    pub content_types: Vec<String>,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            algorithms: ["zstd", "br", "gzip"].map(String::from).to_vec(),
            min_bytes: 1024,
            content_types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Which cross-origin callers a browser may let read the route's answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed: `scheme://host[:port]` exactly, a pattern where
    /// `*` stands for one or more characters of a host name or port
    /// (`https://*.example.com`, `http://localhost:*`), or `*` alone for
    /// any origin. At least one.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows. Default `GET`, `HEAD`, `POST`.
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows (`*`: whichever it asks for).
    /// Default: none beyond the CORS-safelisted ones.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the caller's script may read beyond the
    /// safelisted ones. Default: none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Let the caller send and read credentials (cookies, HTTP auth):
    /// `Access-Control-Allow-Credentials: true`; the origin is then always
    /// named, never `*`. Default false.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer, seconds
    /// (`Access-Control-Max-Age`). Default: not sent (the browser's own,
    /// 5 s in Chromium).
    #[serde(default)]
    pub max_age_s: Option<u64>,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

/// Whether `origin` (`scheme://host[:port]`, as a browser sends it)
/// matches `pattern` (an origin where `*` stands for one or more
/// characters of a host name or port).
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = origin.strip_prefix(first) else {
        return false;
    };
    let mut wildcards = parts.peekable();
    while let Some(literal) = wildcards.next() {
        let last = wildcards.peek().is_none();
        // The shortest run of host characters that lets the rest match:
        // try each end of the run in turn.
        let run = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
            .count();
        let found = (1..=run).find(|&n| {
            let after = &rest[n..];
            if last {
                after == literal
            } else {
                after.starts_with(literal)
            }
        });
        match found {
            Some(n) => rest = &rest[n + literal.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The largest request body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyLimitConfig {
    /// Bytes, ≥ 1.
    pub max_bytes: u64,
}

/// Request bodies decoded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DecompressConfig {
    /// The codings decoded: `gzip`, `br`, `zstd`. Default all three.
    pub algorithms: Vec<String>,
    /// The largest decoded body, bytes, ≥ 1. Default 10485760 (10 MiB).
    pub max_decoded_bytes: u64,
}

impl Default for DecompressConfig {
    fn default() -> Self {
        Self {
            algorithms: ["gzip", "br", "zstd"].map(String::from).to_vec(),
            max_decoded_bytes: 10 << 20,
        }
    }
}

/// A value a header template may insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `{client_ip}`: the connection's peer address.
    ClientIp,
    /// `{host}`: the host the client addressed, without port.
    Host,
    /// `{method}`: the request method.
    Method,
    /// `{path}`: the request path as routed (before this route's rewrites).
    Path,
    /// `{scheme}`: `http` or `https`, as the client connected.
    Scheme,
    /// `{route}`: the route's position in `routes`, from 0.
    Route,
    /// `{client_identity}`: the first subject alternative name of the
    /// client certificate the listener verified (mTLS), empty without one.
    ClientIdentity,
    /// `{principal}`: the id of the principal an authentication filter
    /// before this one found, empty without one.
    Principal,
}

impl Variable {
    const ALL: [(&'static str, Variable); 8] = [
        ("client_ip", Variable::ClientIp),
        ("host", Variable::Host),
        ("method", Variable::Method),
        ("path", Variable::Path),
        ("scheme", Variable::Scheme),
        ("route", Variable::Route),
        ("client_identity", Variable::ClientIdentity),
        ("principal", Variable::Principal),
    ];
}

/// A piece of a header template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text as written.
    Literal(String),
    /// A variable's value for the request.
    Variable(Variable),
}

/// Splits a header template into literal text and variables.
///
/// # Errors
/// An unknown variable, or an unmatched `{` or `}`.
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let brace = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        if rest.as_bytes().first() == Some(&brace) {
            literal.push(brace as char);
            rest = &rest[1..];
            continue;
        }
        if brace == b'}' {
            return Err(format!(
                "`{template}` has a `}}` without `{{` (write `}}}}`)"
            ));
        }
        let end = rest
            .find('}')
            .ok_or_else(|| format!("`{template}` has a `{{` without `}}` (write `{{{{`)"))?;
        let name = &rest[..end];
        let variable = Variable::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let known: Vec<&str> = Variable::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown variable `{{{name}}}` (known: {})",
                    known.join(", ")
                )
            })?;
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(TemplatePart::Variable(variable));
        rest = &rest[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    Ok(parts)
}

/// An address or CIDR block of an [`IpFilterConfig`]: `10.0.0.0/8`, or a
/// bare address as its own /32 or /128.
///
/// # Errors
/// Why `text` is neither.
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    ipnet::IpNet::from_str(text)
        .or_else(|_| IpAddr::from_str(text).map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))
}

impl FilterConfig {
    /// Checks what the types cannot say; the key is relative to the filter.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        match self {
            FilterConfig::StripPrefix(p) | FilterConfig::AddPrefix(p) => {
                if !p.prefix.starts_with('/') || p.prefix.len() < 2 || p.prefix.ends_with('/') {
                    return Err((
                        "prefix".into(),
                        format!(
                            "`{}` must start with `/`, not end with one, and not be `/`",
                            p.prefix
                        ),
                    ));
                }
                http::uri::PathAndQuery::from_str(&p.prefix)
                    .map_err(|e| ("prefix".to_string(), format!("`{}`: {e}", p.prefix)))?;
            }
            FilterConfig::RegexRewrite(r) => {
                regex::Regex::new(&r.pattern)
                    .map_err(|e| ("pattern".to_string(), format!("invalid regex: {e}")))?;
                if !r.substitution.starts_with('/') {
                    return Err((
                        "substitution".into(),
                        format!("`{}` must start with `/`", r.substitution),
                    ));
                }
            }
            FilterConfig::HostRewrite(h) => {
                http::uri::Authority::from_str(&h.host).map_err(|e| {
                    (
                        "host".to_string(),
                        format!("`{}` is not a host: {e}", h.host),
                    )
                })?;
            }
            FilterConfig::RequestHeaders(rules) | FilterConfig::ResponseHeaders(rules) => {
                rules.validate()?
            }
            FilterConfig::Redirect(r) => r.validate()?,
            FilterConfig::Respond(r) => {
                if !(200..=599).contains(&r.status) {
                    return Err(("status".into(), "must be 200..=599".into()));
                }
                http::HeaderValue::from_str(&r.content_type).map_err(|_| {
                    (
                        "content_type".to_string(),
                        format!("`{}` is not a valid header value", r.content_type),
                    )
                })?;
                for (name, value) in &r.headers {
                    check_header("headers", name, Some(value))?;
                }
            }
            FilterConfig::IpFilter(ip) => {
                for (key, list) in [
                    ("allow", &ip.allow),
                    ("deny", &ip.deny),
                    ("trusted_proxies", &ip.trusted_proxies),
                ] {
                    for (i, entry) in list.iter().enumerate() {
                        parse_cidr(entry).map_err(|reason| (format!("{key}[{i}]"), reason))?;
                    }
                }
            }
            FilterConfig::Cors(cors) => cors.validate()?,
            FilterConfig::RequestId(r) => check_header("header", &r.header, None)?,
            FilterConfig::Forwarded(f) => {
                for (i, entry) in f.trusted_proxies.iter().enumerate() {
                    parse_cidr(entry)
                        .map_err(|reason| (format!("trusted_proxies[{i}]"), reason))?;
                }
            }
            FilterConfig::HeaderLimit(h) => {
                if h.max_headers == 0 {
                    return Err(("max_headers".into(), "must be ≥ 1".into()));
                }
                if h.max_header_bytes == 0 {
                    return Err(("max_header_bytes".into(), "must be ≥ 1".into()));
                }
            }
            FilterConfig::Compress(c) => {
                check_algorithms(&c.algorithms)?;
                for (i, media) in c.content_types.iter().enumerate() {
                    let (kind, sub) = media.split_once('/').unwrap_or_default();
                    if kind.is_empty() || sub.is_empty() || kind == "*" || media.contains(';') {
                        return Err((
                            format!("content_types[{i}]"),
                            format!("`{media}` is not a media type (`type/subtype` or `type/*`)"),
                        ));
                    }
                }
            }
            FilterConfig::BodyLimit(b) => {
                if b.max_bytes == 0 {
                    return Err(("max_bytes".into(), "must be ≥ 1".into()));
                }
            }
            FilterConfig::Decompress(d) => {
                check_algorithms(&d.algorithms)?;
                if d.max_decoded_bytes == 0 {
                    return Err(("max_decoded_bytes".into(), "must be ≥ 1".into()));
                }
            }
            FilterConfig::Plugin(p) => p
                .plugin
                .validate()
                .map_err(|(k, reason)| (format!("plugin.{k}"), reason))?,
            FilterConfig::ApiKey(k) => k.validate()?,
            FilterConfig::ClientCert(_) => {}
            FilterConfig::Jwt(jwt) => jwt.validate()?,
            FilterConfig::Authorize(rules) => rules.validate()?,
            FilterConfig::ForwardAuth(f) => f.validate()?,
            FilterConfig::RateLimit(r) => r.validate()?,
        }
        Ok(())
    }

    /// The `kind` as the config writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterConfig::StripPrefix(_) => "strip-prefix",
            FilterConfig::AddPrefix(_) => "add-prefix",
            FilterConfig::RegexRewrite(_) => "regex-rewrite",
            FilterConfig::HostRewrite(_) => "host-rewrite",
            FilterConfig::RequestHeaders(_) => "request-headers",
            FilterConfig::ResponseHeaders(_) => "response-headers",
            FilterConfig::Redirect(_) => "redirect",
            FilterConfig::Respond(_) => "respond",
            FilterConfig::IpFilter(_) => "ip-filter",
            FilterConfig::Cors(_) => "cors",
            FilterConfig::RequestId(_) => "request-id",
            FilterConfig::Forwarded(_) => "forwarded",
            FilterConfig::HeaderLimit(_) => "header-limit",
            FilterConfig::Compress(_) => "compress",
            FilterConfig::BodyLimit(_) => "body-limit",
            FilterConfig::Decompress(_) => "decompress",
            FilterConfig::Plugin(_) => "plugin",
            FilterConfig::ApiKey(_) => "api-key",
            FilterConfig::ClientCert(_) => "client-cert",
            FilterConfig::Jwt(_) => "jwt",
            FilterConfig::Authorize(_) => "authorize",
            FilterConfig::ForwardAuth(_) => "forward-auth",
            FilterConfig::RateLimit(_) => "rate-limit",
        }
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.providers.is_empty() {
            return Err(("providers".into(), "give at least one".into()));
        }
        if let Some(resource) = &self.resource {
            check_url(resource).map_err(|reason| ("resource".to_string(), reason))?;
            if resource.contains(['?', '#']) {
                return Err((
                    "resource".into(),
                    format!("`{resource}` must have no query or fragment (RFC 8707 §2)"),
                ));
            }
            if let Some(i) = self
                .providers
                .iter()
                .position(|p| !p.audiences.contains(resource))
            {
                return Err((
                    format!("providers[{i}].audiences"),
                    format!("must list the resource `{resource}`: its tokens are for it"),
                ));
            }
        }
        check_scopes("scopes_supported", &self.scopes_supported)?;
        for (i, provider) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("providers[{i}].{k}");
            if provider.issuer.is_empty() {
                return Err((key("issuer"), "must not be empty".into()));
            }
            if provider.audiences.is_empty() {
                return Err((key("audiences"), "give at least one".into()));
            }
            match (&provider.jwks, &provider.jwks_file, &provider.jwks_url) {
                (Some(_), None, None) | (None, None, Some(_)) if provider.hmac => {
                    return Err((
                        key("hmac"),
                        "HMAC secrets are read from `jwks_file` only (inline `jwks` is shown by the admin API and shared by the config store; a secret is not fetched from a URL)".into(),
                    ));
                }
                (Some(jwks), None, None) => {
                    parse_jwks(jwks, false).map_err(|reason| (key("jwks"), reason))?;
                }
                (None, Some(_), None) => {}
                (None, None, Some(url)) => {
                    check_url(url).map_err(|reason| (key("jwks_url"), reason))?;
                    if provider.jwks_refresh_s == 0 {
                        return Err((key("jwks_refresh_s"), "must be ≥ 1".into()));
                    }
                }
                _ => {
                    return Err((
                        key("jwks"),
                        "give `jwks`, `jwks_file` or `jwks_url`, one of them".into(),
                    ));
                }
            }
            for name in provider.claims_to_headers.keys() {
                check_header(&key("claims_to_headers"), name, None)?;
            }
        }
        Ok(())
    }
}

impl ApiKeyConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_header("header", &self.header, None)?;
        if self.query.as_deref() == Some("") {
            return Err(("query".into(), "must not be empty".into()));
        }
        if self.principals.is_empty() {
            return Err(("principals".into(), "give at least one".into()));
        }
        let mut ids = std::collections::HashSet::new();
        let mut digests = std::collections::HashMap::new();
        for (i, principal) in self.principals.iter().enumerate() {
            if principal.id.is_empty() || !ids.insert(principal.id.as_str()) {
                return Err((
                    format!("principals[{i}].id"),
                    format!("`{}` is empty or not unique", principal.id),
                ));
            }
            if principal.keys.is_empty() {
                return Err((format!("principals[{i}].keys"), "give at least one".into()));
            }
            for (j, key) in principal.keys.iter().enumerate() {
                let key_path = format!("principals[{i}].keys[{j}]");
                let digest = parse_key_digest(key).map_err(|reason| (key_path.clone(), reason))?;
                if let Some(other) = digests.insert(digest, principal.id.as_str()) {
                    return Err((key_path, format!("the same key is already `{other}`'s")));
                }
            }
        }
        Ok(())
    }
}

/// Scopes as RFC 6749 §3.3 writes them (printable, no space, quote nor
/// backslash), the list at `key`.
fn check_scopes(key: &str, scopes: &[String]) -> Result<(), Invalid> {
    for (i, scope) in scopes.iter().enumerate() {
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err((
                format!("{key}[{i}]"),
                format!("`{scope}` is not a scope (RFC 6749 §3.3)"),
            ));
        }
    }
    Ok(())
}

/// A URL Switchyard fetches from: `http://` or `https://`, with a host.
fn check_url(url: &str) -> Result<(), String> {
    let parsed = http::Uri::from_str(url).ok();
    if parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    }) {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not an http:// or https:// URL with a host"
        ))
    }
}

/// A `compress` or `decompress` filter's `algorithms`: at least one, each
/// a coding Switchyard has.
fn check_algorithms(algorithms: &[String]) -> Result<(), Invalid> {
    if algorithms.is_empty() {
        return Err(("algorithms".into(), "give at least one".into()));
    }
    for (i, name) in algorithms.iter().enumerate() {
        if !matches!(name.as_str(), "zstd" | "br" | "gzip") {
            return Err((
                format!("algorithms[{i}]"),
                format!("`{name}` is not one of `zstd`, `br`, `gzip`"),
            ));
        }
    }
    Ok(())
}

/// A header name, and its value template when it has one, checked.
fn check_header(key: &str, name: &str, template: Option<&str>) -> Result<(), Invalid> {
    http::HeaderName::from_str(name).map_err(|_| {
        (
            key.to_string(),
            format!("`{name}` is not a valid header name"),
        )
    })?;
    if let Some(template) = template {
        let key = format!("{key}.{name}");
        for part in parse_template(template).map_err(|reason| (key.clone(), reason))? {
            if let TemplatePart::Literal(text) = part {
                http::HeaderValue::from_str(&text)
                    .map_err(|_| (key.clone(), format!("`{text}` is not a valid header value")))?;
            }
        }
    }
    Ok(())
}

impl HeaderRules {
    fn validate(&self) -> Result<(), Invalid> {
        for (i, name) in self.remove.iter().enumerate() {
            check_header(&format!("remove[{i}]"), name, None)?;
        }
        for (name, value) in &self.set {
            check_header("set", name, Some(value))?;
        }
        for (name, value) in &self.add {
            check_header("add", name, Some(value))?;
        }
        Ok(())
    }
}

impl CorsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.allow_origins.is_empty() {
            return Err(("allow_origins".into(), "give at least one origin".into()));
        }
        for (i, origin) in self.allow_origins.iter().enumerate() {
            let key = format!("allow_origins[{i}]");
            if origin == "*" {
                if self.allow_credentials {
                    return Err((
                        key,
                        "`*` cannot be combined with `allow_credentials` (the Fetch standard \
                         refuses it): name the origins"
                            .into(),
                    ));
                }
                continue;
            }
            let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
            let host_port = rest.replace('*', "x");
            if !matches!(scheme, "http" | "https")
                || rest.is_empty()
                || rest.contains('/')
                || rest.contains("**")
                || http::uri::Authority::from_str(&host_port).is_err()
            {
                return Err((
                    key,
                    format!(
                        "`{origin}` is not an origin (`scheme://host[:port]`, `*` for a part \
                         of a host name or port, or `*` alone)"
                    ),
                ));
            }
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            http::Method::from_str(method).map_err(|_| {
                (
                    format!("allow_methods[{i}]"),
                    format!("`{method}` is not a method"),
                )
            })?;
        }
        for (key, names) in [
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name != "*" {
                    check_header(&format!("{key}[{i}]"), name, None)?;
                }
            }
        }
        Ok(())
    }
}

impl RedirectConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(scheme) = &self.scheme
            && scheme != "http"
            && scheme != "https"
        {
            return Err((
                "scheme".into(),
                format!("`{scheme}` must be `http` or `https`"),
            ));
        }
        if let Some(host) = &self.host {
            http::uri::Authority::from_str(host)
                .ok()
                .filter(|a| a.port().is_none())
                .ok_or_else(|| {
                    (
                        "host".to_string(),
                        format!("`{host}` is not a host name (give the port as `port`)"),
                    )
                })?;
        }
        if self.port == Some(0) {
            return Err(("port".into(), "must be 1..=65535".into()));
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.contains('?') {
                return Err((
                    "path".into(),
                    format!("`{path}` must start with `/` and carry no query"),
                ));
            }
            http::uri::PathAndQuery::from_str(path)
                .map_err(|e| ("path".to_string(), format!("`{path}`: {e}")))?;
        }
        if ![301, 302, 303, 307, 308].contains(&self.status) {
            return Err((
                "status".into(),
                format!(
                    "{} is not a redirect status (301, 302, 303, 307, 308)",
                    self.status
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_variables() {
        assert_eq!(
            parse_template("for={client_ip}; {{x}}").unwrap(),
            vec![
                TemplatePart::Literal("for=".into()),
                TemplatePart::Variable(Variable::ClientIp),
                TemplatePart::Literal("; {x}".into()),
            ]
        );
        assert_eq!(parse_template("").unwrap(), vec![]);
        assert!(
            parse_template("{nope}")
                .unwrap_err()
                .contains("unknown variable `{nope}`")
        );
        assert!(
            parse_template("a{client_ip")
                .unwrap_err()
                .contains("without")
        );
        assert!(parse_template("a}b").unwrap_err().contains("without"));
    }

    #[test]
    fn origin_patterns_match_host_and_port_parts() {
        assert!(origin_matches(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(origin_matches(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://evil.com/.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "http://app.example.com"
        ));
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:8080"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost:8080.evil.com:1"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
    }

    #[test]
    fn cidrs_and_bare_addresses_parse() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().prefix_len(), 8);
        assert_eq!(parse_cidr("::1").unwrap().prefix_len(), 128);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn rules_compile_with_their_variables_only() {
        assert!(compile_rule("principal.scopes.exists(s, s == 'admin')").is_ok());
        assert!(compile_rule("request.headers['x-team'] == 'a' && mcp == null").is_ok());
        let unknown = compile_rule("princpal.id == 'a'").unwrap_err();
        assert!(unknown.contains("`princpal`"), "{unknown}");
        assert!(compile_rule("principal.id ==").is_err());
        // A macro's variable is bound inside it only.
        assert!(compile_rule("[1].all(x, x > 0) && x == 1").is_err());
        assert!(compile_rule("{'a': request.path}.exists(k, k == 'a')").is_ok());
    }
}
