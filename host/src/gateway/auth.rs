//! Authentication: the principal a request acts as, and the `api-key`
//! filter that finds it from a key (Kong's key-auth, Envoy's
//! `api_key_auth`, agentgateway's `apiKey`). (The `client-cert` filter's
//! principal is the listener's verified certificate, in the chain.)
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed and
//! looked up by its digest's first 8 bytes, and the candidates' whole
//! digests are compared in constant time (`subtle`): what the timing of a
//! check can reveal is a fact about a digest, never about a key. The key is
//! removed from the request before it goes anywhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderName, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use arc_swap::ArcSwap;
use jsonwebtoken::Validation;

use super::jwks::{IssuerKey, MakeKeys, RemoteJwks};
use crate::config::{ApiKeyConfig, JwtConfig, JwtProvider, parse_jwks, parse_key_digest};

/// Who a request acts as: found by an authentication filter, carried in
/// the request's extensions (as `Arc<Principal>`) for the filters after
/// it (`{principal}` in header templates) and the request's log.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its id, as the config names it.
    pub id: String,
    /// How it was authenticated: `api-key`, `client-cert`, `jwt`.
    pub method: &'static str,
    /// What else is known of it: an API key principal's metadata (team,
    /// plan), a JWT's claims of text, number or boolean.
    pub metadata: BTreeMap<String, String>,
    /// The scopes it holds.
    pub scopes: Vec<String>,
}

/// What an authentication filter found.
#[derive(Debug)]
pub enum Check {
    /// Credentials naming this principal.
    Found(Arc<Principal>),
    /// No credentials.
    Missing,
    /// Credentials that name no principal, and why.
    Invalid(String),
}

/// An `api-key` filter, compiled from its config.
pub struct ApiKeys {
    header: HeaderName,
    query: Option<String>,
    /// The principals by the first 8 bytes of a key's digest, with the
    /// whole digest.
    index: HashMap<u64, Vec<KnownKey>>,
}

/// A key's whole digest and its principal.
type KnownKey = ([u8; 32], Arc<Principal>);

impl ApiKeys {
    /// The filter of `config` (validated at load: what validation refuses
    /// is skipped).
    pub fn new(config: &ApiKeyConfig) -> Self {
        let mut index: HashMap<u64, Vec<KnownKey>> = HashMap::new();
        for entry in &config.principals {
            let principal = Arc::new(Principal {
                id: entry.id.clone(),
                method: "api-key",
                metadata: entry.metadata.clone(),
                scopes: entry.scopes.clone(),
            });
            for digest in entry.keys.iter().filter_map(|k| parse_key_digest(k).ok()) {
                index
                    .entry(prefix(&digest))
                    .or_default()
                    .push((digest, Arc::clone(&principal)));
            }
        }
        Self {
            header: HeaderName::try_from(config.header.as_str())
                .unwrap_or(HeaderName::from_static("x-api-key")),
            query: config.query.clone(),
            index,
        }
    }

    /// The header the key is read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Takes the key out of `parts` (the header, and the query parameter
    /// when the filter reads one; every copy of either is removed) and
    /// finds its principal. The header wins over the query parameter.
    pub fn check(&self, parts: &mut http::request::Parts) -> Check {
        let from_header = parts.headers.remove(&self.header);
        let from_query = self
            .query
            .as_deref()
            .and_then(|name| take_query_parameter(&mut parts.uri, name));
        let key = match (&from_header, &from_query) {
            (Some(value), _) => value.as_bytes().trim_ascii(),
            (None, Some(key)) => key.as_slice(),
            (None, None) => return Check::Missing,
        };
        self.principal(key).map_or_else(
            || Check::Invalid("the API key is not valid".into()),
            Check::Found,
        )
    }

    /// The principal whose key is `key`.
    fn principal(&self, key: &[u8]) -> Option<Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.index
            .get(&prefix(&digest))?
            .iter()
            .find(|(known, _)| bool::from(known.ct_eq(&digest)))
            .map(|(_, principal)| Arc::clone(principal))
    }
}

/// A `jwt` filter, compiled from its config: per issuer, its keys and
/// the validation of a token each signs, and the tokens verified lately.
pub struct JwtIssuers {
    issuers: Vec<Issuer>,
    /// Tokens verified lately (Envoy's `jwt_cache_config`): a signature is
    /// checked once per token, not once per request. An entry lives at
    /// most [`VERIFIED_TTL`] and never past its token's `exp`.
    verified: moka::sync::Cache<String, Arc<Verified>>,
    /// Leeway on `exp`, seconds.
    leeway_s: u64,
    /// The `WWW-Authenticate` challenge's parameters after the realm:
    /// where the resource's metadata is and the scopes it asks for
    /// (RFC 9728 §5.1), when the filter names its resource.
    challenge: String,
}

/// How many verified tokens a `jwt` filter remembers.
pub const VERIFIED_TOKENS: u64 = 10_000;

/// How long a verified token is remembered at most: a key removed from
/// the config stops a token within this time.
pub const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A verified token: its principal, the headers its claims set, its `exp`.
struct Verified {
    principal: Arc<Principal>,
    headers: Vec<(HeaderName, http::HeaderValue)>,
    exp: u64,
}

/// One provider of a `jwt` filter.
struct Issuer {
    /// Its keys: `kid`, key, and the validation of a token signed with it
    /// (`iss`, `aud`, `exp`, `nbf`, the key's algorithm); swapped when
    /// fetched again from its `jwks_url`.
    keys: Arc<ArcSwap<Vec<IssuerKey>>>,
    /// Where its keys are fetched from, when from a URL.
    remote: Option<Arc<RemoteJwks>>,
    principal_claim: String,
    claims_to_headers: Vec<(HeaderName, String)>,
}

impl JwtIssuers {
    /// The filter of `config` (validated at load: what validation refuses
    /// is skipped).
    pub fn new(config: &JwtConfig) -> Self {
        let issuers = config
            .providers
            .iter()
            .map(|provider| {
                let make = keys_of(provider, config.clock_skew_s);
                let keys = Arc::new(ArcSwap::from_pointee(
                    provider
                        .jwks_text()
                        .and_then(|text| make(&text))
                        .unwrap_or_default(),
                ));
                let remote = provider.jwks_url.as_deref().and_then(|url| {
                    let refresh = std::time::Duration::from_secs(provider.jwks_refresh_s);
                    RemoteJwks::start(url, Arc::clone(&keys), make, refresh)
                        .inspect_err(|reason| tracing::error!(%url, %reason, "the JWKS cannot be fetched: its tokens are refused"))
                        .ok()
                });
                Issuer {
                    keys,
                    remote,
                    principal_claim: provider.principal_claim.clone(),
                    claims_to_headers: provider
                        .claims_to_headers
                        .iter()
                        .filter_map(|(h, c)| {
                            Some((HeaderName::try_from(h.as_str()).ok()?, c.clone()))
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            issuers,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_TTL)
                .build(),
            leeway_s: config.clock_skew_s,
            challenge: {
                let mut more = String::new();
                if let Some((_, url)) = config.resource_metadata() {
                    more.push_str(&format!(r#", resource_metadata="{url}""#));
                }
                if !config.scopes_supported.is_empty() {
                    more.push_str(&format!(
                        r#", scope="{}""#,
                        config.scopes_supported.join(" ")
                    ));
                }
                more
            },
        }
    }

    /// Takes the bearer token out of `parts` (`Authorization: Bearer …`,
    /// RFC 6750 §2.1), verifies it against its issuer's keys unless it
    /// was verified lately and has not expired (a token no key known
    /// verifies has its issuers' `jwks_url`s fetched again first), and
    /// finds its principal; the claims the issuer maps to headers are set
    /// (a client's own header of those names removed either way).
    pub async fn check(&self, parts: &mut http::request::Parts) -> Check {
        for (name, _) in self.issuers.iter().flat_map(|i| &i.claims_to_headers) {
            parts.headers.remove(name);
        }
        // A cheap clone (shared bytes): the header is removed, the token read.
        let Some(value) = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .filter(|v| bearer(v).is_some())
            .cloned()
        else {
            return Check::Missing;
        };
        parts.headers.remove(http::header::AUTHORIZATION);
        let token = bearer(&value).unwrap_or_default();
        let now = jsonwebtoken::get_current_timestamp();
        let verified = match self
            .verified
            .get(token)
            .filter(|known| now <= known.exp.saturating_add(self.leeway_s))
        {
            Some(known) => known,
            None => {
                let verified = match self.verify(token) {
                    Err(Unverified::NoKey(kid)) if self.refetch(kid.as_deref()).await => {
                        self.verify(token)
                    }
                    other => other,
                };
                match verified {
                    Ok(verified) => {
                        self.verified
                            .insert(token.to_owned(), Arc::clone(&verified));
                        verified
                    }
                    Err(Unverified::NoKey(_)) => {
                        return Check::Invalid("no key of a known issuer signed the token".into());
                    }
                    Err(Unverified::Invalid(reason)) => return Check::Invalid(reason),
                }
            }
        };
        for (name, value) in &verified.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        Check::Found(Arc::clone(&verified.principal))
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3): for a
    /// request `missing` a token, or with a bad one (`invalid_token`);
    /// with the resource's metadata URL and scopes when the filter names
    /// its resource (RFC 9728 §5.1; the MCP authorization specification's
    /// discovery).
    pub fn challenge(&self, missing: bool) -> std::borrow::Cow<'static, str> {
        let error = if missing {
            ""
        } else {
            r#", error="invalid_token""#
        };
        match (self.challenge.is_empty(), missing) {
            (true, true) => r#"Bearer realm="switchyard""#.into(),
            (true, false) => r#"Bearer realm="switchyard", error="invalid_token""#.into(),
            _ => format!(r#"Bearer realm="switchyard"{error}{}"#, self.challenge).into(),
        }
    }

    /// Whether fetching the keys of the issuers with a `jwks_url` again
    /// gave a key of `kid`.
    async fn refetch(&self, kid: Option<&str>) -> bool {
        for remote in self.issuers.iter().filter_map(|i| i.remote.as_ref()) {
            if remote.refetch_for(kid).await {
                return true;
            }
        }
        false
    }

    /// Verifies `token` against each issuer's keys (those of its `kid`
    /// when it names one).
    ///
    /// # Errors
    /// No key to try (of its `kid` and algorithm), or why the keys tried
    /// refused it, or why its claims name no principal.
    fn verify(&self, token: &str) -> Result<Arc<Verified>, Unverified> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Unverified::Invalid(format!("the token is malformed: {e}")))?;
        let mut last = None;
        for issuer in &self.issuers {
            for (kid, key, validation) in issuer.keys.load().iter() {
                let other_key = header.kid.is_some() && kid.is_some() && header.kid != *kid;
                if validation.algorithms != [header.alg] || other_key {
                    continue;
                }
                match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token, key, validation,
                ) {
                    Ok(data) => {
                        return issuer.principal(&data.claims).map(Arc::new).ok_or_else(|| {
                            Unverified::Invalid(format!(
                                "the token has no `{}` claim",
                                issuer.principal_claim
                            ))
                        });
                    }
                    Err(e) => last = Some(format!("the token is not valid: {e}")),
                }
            }
        }
        Err(last.map_or(Unverified::NoKey(header.kid), Unverified::Invalid))
    }
}

/// Why a token is not verified.
enum Unverified {
    /// No key known of its `kid` (its own) and algorithm.
    NoKey(Option<String>),
    /// A key refused it, or it is malformed, or names no principal.
    Invalid(String),
}

/// How `provider`'s JWKS documents become keys: each key with the
/// validation of a token it signs (`clock_skew_s` of leeway).
fn keys_of(provider: &JwtProvider, clock_skew_s: u64) -> MakeKeys {
    let (issuer, audiences) = (provider.issuer.clone(), provider.audiences.clone());
    let hmac = provider.hmac;
    Box::new(move |text: &str| {
        Ok(parse_jwks(text, hmac)?
            .into_iter()
            .map(|(kid, algorithm, key)| {
                let mut validation = Validation::new(algorithm);
                validation.set_issuer(&[&issuer]);
                validation.set_audience(&audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.leeway = clock_skew_s;
                validation.validate_nbf = true;
                (kid, key, validation)
            })
            .collect())
    })
}

/// The token of an `Authorization: Bearer …` value (RFC 6750 §2.1).
fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl Issuer {
    /// The principal of verified `claims` and the headers its claims set;
    /// `None` without the principal claim.
    fn principal(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Option<Verified> {
        let text = |value: &serde_json::Value| match value {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let id = claims.get(&self.principal_claim).and_then(text)?;
        let headers = self
            .claims_to_headers
            .iter()
            .filter_map(|(name, claim)| {
                let value = claims.get(claim).and_then(text)?;
                Some((name.clone(), http::HeaderValue::try_from(value).ok()?))
            })
            .collect();
        // `scope` (RFC 8693 §4.2: space-separated) or `scp` (a list).
        let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        // Its claims of text, number or boolean (`iss`, `sub`, `tenant`…),
        // for rules (`principal.metadata.tenant == 'a'`, a required claim
        // as `has(principal.metadata.tenant)`).
        let metadata = claims
            .iter()
            .filter_map(|(name, value)| {
                let value = match value {
                    serde_json::Value::Bool(b) => b.to_string(),
                    other => text(other)?,
                };
                Some((name.clone(), value))
            })
            .collect();
        Some(Verified {
            principal: Arc::new(Principal {
                id,
                method: "jwt",
                metadata,
                scopes,
            }),
            headers,
            exp: claims
                .get("exp")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        })
    }
}

/// The first 8 bytes of a digest, as the index's key.
fn prefix(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Removes every `name=…` pair from the query of `uri`; returns the first
/// one's value, percent-decoded.
fn take_query_parameter(uri: &mut Uri, name: &str) -> Option<Vec<u8>> {
    let query = uri.query()?;
    let mut value = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut removed = false;
    for (key, v) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            removed = true;
            value.get_or_insert_with(|| v.as_bytes().to_vec());
        } else {
            kept.append_pair(&key, &v);
        }
    }
    if removed {
        let kept = kept.finish();
        let path_and_query = if kept.is_empty() {
            uri.path().to_string()
        } else {
            format!("{}?{kept}", uri.path())
        };
        let mut parts = std::mem::take(uri).into_parts();
        parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
        *uri = Uri::from_parts(parts).unwrap_or_default();
    }
    value
}

/// A new API key (32 random bytes, base64url without padding, prefixed
/// `sy_`) and its digest as an `api-key` filter stores it
/// (`sha256:` and 64 hex digits).
///
/// # Errors
/// When the OS has no randomness to give.
pub fn new_key() -> Result<(String, String), getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!(
        "sy_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = key_digest(&key);
    Ok((key, digest))
}

/// The digest of `key` as an `api-key` filter stores it.
pub fn key_digest(key: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("sha256:");
    for byte in Sha256::digest(key.trim().as_bytes()) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::Strategy;

    use super::*;
    use crate::config::{ApiKeyPrincipal, AuthMode};

    fn keys(mode: AuthMode, query: Option<&str>) -> ApiKeys {
        ApiKeys::new(&ApiKeyConfig {
            header: "x-api-key".into(),
            query: query.map(str::to_owned),
            mode,
            principals: vec![ApiKeyPrincipal {
                id: "alice".into(),
                keys: vec![key_digest("k1"), key_digest("k2")],
                metadata: BTreeMap::new(),
                scopes: Vec::new(),
            }],
        })
    }

    fn parts(uri: &str, key: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::builder().uri(uri);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn either_key_of_a_principal_finds_it_and_the_key_is_removed() {
        let keys = keys(AuthMode::Required, None);
        for key in ["k1", " k2 "] {
            let mut parts = parts("/x", Some(key));
            assert!(matches!(keys.check(&mut parts), Check::Found(p) if p.id == "alice"));
            assert!(parts.headers.get("x-api-key").is_none());
        }
        assert!(matches!(
            keys.check(&mut parts("/x", Some("k3"))),
            Check::Invalid(_)
        ));
        assert!(matches!(keys.check(&mut parts("/x", None)), Check::Missing));
    }

    #[test]
    fn a_query_key_is_read_only_when_asked_for_and_taken_out_of_the_query() {
        let mut plain = parts("/x?api_key=k1&page=2", None);
        assert!(matches!(
            keys(AuthMode::Required, None).check(&mut plain),
            Check::Missing
        ));
        let keys = keys(AuthMode::Required, Some("api_key"));
        let mut with = parts("/x?api_key=k1&page=2&api_key=k9", None);
        assert!(matches!(keys.check(&mut with), Check::Found(_)));
        assert_eq!(with.uri.path_and_query().unwrap().as_str(), "/x?page=2");
        let mut only = parts("/x?api_key=k2", None);
        assert!(matches!(keys.check(&mut only), Check::Found(_)));
        assert_eq!(only.uri.path_and_query().unwrap().as_str(), "/x");
    }

    /// A `jwt` filter with one ES256 key (RFC 7517 A.1's public key).
    fn issuers() -> JwtIssuers {
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
        let config: JwtConfig = serde_json::from_value(serde_json::json!({
            "providers": [{ "issuer": "https://id.test", "audiences": ["a"], "jwks": jwks }],
        }))
        .unwrap();
        JwtIssuers::new(&config)
    }

    /// Base64url without padding, as JWTs are written.
    fn segment(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { failure_persistence: None, ..Default::default() })]

        /// Any bearer token — text, or three segments whose header names
        /// any algorithm (`none` and HMAC among them) and `kid` and whose
        /// claims are any JSON — is refused, never taken and never a
        /// panic.
        #[test]
        fn no_forged_or_garbled_token_is_taken(
            token in proptest::prop_oneof![
                ".{0,200}",
                (
                    proptest::sample::select(vec!["none", "HS256", "ES256", "RS256", "EdDSA", "x"]),
                    proptest::option::of("[ -~]{0,8}"),
                    switchyard_fuzzing::json(),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                )
                    .prop_map(|(alg, kid, claims, signature)| {
                        let header = serde_json::json!({ "alg": alg, "typ": "JWT", "kid": kid });
                        format!(
                            "{}.{}.{}",
                            segment(header.to_string().as_bytes()),
                            segment(claims.to_string().as_bytes()),
                            segment(&signature)
                        )
                    }),
            ]
        ) {
            let issuers = issuers();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut request = http::Request::builder().uri("/x");
            if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
                request = request.header("authorization", value);
            }
            let (mut parts, ()) = request.body(()).unwrap().into_parts();
            let checked = runtime.block_on(issuers.check(&mut parts));
            proptest::prop_assert!(!matches!(checked, Check::Found(_)), "{token}");
            // A token that was read is taken out of the request.
            if matches!(checked, Check::Invalid(_)) {
                proptest::prop_assert!(parts.headers.get("authorization").is_none());
            }
        }
    }

    #[test]
    fn a_new_key_matches_its_digest() {
        let (key, digest) = new_key().unwrap();
        assert!(key.starts_with("sy_") && key.len() > 40, "{key}");
        assert_eq!(digest, key_digest(&key));
        assert!(parse_key_digest(&digest).is_ok(), "{digest}");
        let (other, _) = new_key().unwrap();
        assert_ne!(key, other);
    }
}
