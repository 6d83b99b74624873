//! Sealed session ids: the gateway's `Mcp-Session-Id` carries the session
//! itself — for each target, the upstream session and the instance that
//! holds it — encrypted and authenticated with AES-256-GCM (NIST SP
//! 800-38D; the `aes-gcm` crate), so that any Switchyard holding the key
//! serves it: after a config change, a restart, or on another replica.
//!
//! A sealed id is `base64url(nonce ‖ ciphertext ‖ tag)` with a fresh random
//! 96-bit nonce; the plaintext is the JSON of [`SessionState`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::config::{Config, McpSessionsConfig};

/// The environment variable that gives the keys (comma-separated).
pub const KEYS_ENV: &str = "SWITCHYARD_MCP_SESSION_KEYS";

/// Bytes of a nonce.
const NONCE_LEN: usize = 12;

/// What every MCP route of a process shares, from one router to the next:
/// the keys that seal session ids and what was seen of the sessions.
pub struct Sessions {
    /// The keys that seal MCP routes' session ids.
    pub keys: SessionKeys,
    /// What was seen of MCP sessions: last use, ended.
    pub seen: SessionsSeen,
}

impl Sessions {
    /// The session keys of `config`'s `mcp_sessions` (validated with the
    /// config; a random key should they fail to load now).
    pub fn new(config: &Config) -> Arc<Self> {
        let has_mcp = config.routes.iter().any(|r| r.mcp.is_some());
        let keys = SessionKeys::load(&config.mcp_sessions, has_mcp).unwrap_or_else(|error| {
            tracing::error!(%error, "MCP session keys; using a random key");
            SessionKeys::new(&[random_key()])
        });
        Arc::new(Self {
            keys,
            seen: SessionsSeen::default(),
        })
    }
}

/// A random AES-256 key.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    let _ = getrandom::fill(&mut key);
    key
}

/// The keys that seal and open session ids: the first seals, each opens.
pub struct SessionKeys {
    keys: Vec<Aes256Gcm>,
}

/// What a gateway session is, as sealed in its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The route that issued it (its match, `HOST PATH_PREFIX`): a session
    /// is served by that route only.
    #[serde(rename = "r")]
    pub route: String,
    /// When it was issued, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub issued_ms: u64,
    /// The protocol revision agreed with the client.
    #[serde(rename = "v")]
    pub protocol: String,
    /// Per target that took part, by target name.
    #[serde(rename = "u")]
    pub upstreams: Vec<UpstreamSession>,
    /// The client's name and version, as its `initialize` gave them
    /// (`clientInfo`), for filter plugins; sessions sealed before it was
    /// kept have none.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<(String, String)>,
    /// The principal that opened it (`METHOD:ID`, as an authentication
    /// filter found it), when one did: only that principal may use it
    /// (the MCP specification's binding of sessions to their user).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// A target's side of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// The target's name.
    #[serde(rename = "n")]
    pub target: String,
    /// The instance's URL and the session id it issued; `None` when the
    /// server keeps no session (any instance serves it).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// The protocol revision the target agreed to.
    #[serde(rename = "v")]
    pub protocol: String,
}

/// A session held by one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// The instance's URL, as configured.
    #[serde(rename = "i")]
    pub instance: String,
    /// The `Mcp-Session-Id` it issued.
    #[serde(rename = "s")]
    pub session: String,
}

impl SessionKeys {
    /// The keys of `SWITCHYARD_MCP_SESSION_KEYS`, else of `config.key_file`,
    /// else one random key (with a warning when `warn_random`: sessions
    /// will not survive a restart).
    ///
    /// # Errors
    /// An unreadable file, or a key that is not 32 bytes of base64 or hex,
    /// named by its position.
    pub fn load(config: &McpSessionsConfig, warn_random: bool) -> anyhow::Result<Self> {
        let text = match (std::env::var(KEYS_ENV).ok(), &config.key_file) {
            (Some(v), _) if !v.trim().is_empty() => Some((v.replace(',', "\n"), KEYS_ENV.into())),
            (_, Some(path)) => Some((read(path)?, path.display().to_string())),
            _ => None,
        };
        let Some((text, source)) = text else {
            if warn_random {
                tracing::warn!(
                    "no MCP session key ({KEYS_ENV} or mcp_sessions.key_file): a random one is used; \
                     MCP sessions will not survive a restart nor reach another replica"
                );
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("random key: {e}"))?;
            return Ok(Self::new(&[key]));
        };
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            keys.push(
                parse_key(line).map_err(|reason| {
                    anyhow::anyhow!("{source}: key on line {}: {reason}", n + 1)
                })?,
            );
        }
        anyhow::ensure!(!keys.is_empty(), "{source}: no key");
        Ok(Self::new(&keys))
    }

    /// Keys from their bytes; the first seals.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| Aes256Gcm::new_from_slice(k).expect("32-byte key"))
                .collect(),
        }
    }

    /// `state` sealed with the first key.
    pub fn seal(&self, state: &SessionState) -> String {
        let plain = serde_json::to_vec(state).expect("a session serializes");
        let mut nonce = [0u8; NONCE_LEN];
        // The OS's random source does not fail on Linux once booted; a
        // zero nonce would still be unique enough for one message.
        let _ = getrandom::fill(&mut nonce);
        let sealed = self.keys[0]
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .expect("AES-GCM seals any message under 64 GiB");
        let mut token = Vec::with_capacity(NONCE_LEN + sealed.len());
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The session sealed in `token` by any of the keys; `None` when no key
    /// opens it (forged, altered, or sealed by a key no longer accepted).
    pub fn open(&self, token: &str) -> Option<SessionState> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .keys
            .iter()
            .find_map(|k| k.decrypt(Nonce::from_slice(nonce), sealed).ok())?;
        serde_json::from_slice(&plain).ok()
    }
}

/// What this Switchyard saw of the sessions it served, across config
/// changes (it lives as long as the process): when each was last used, on
/// which route, and which were ended. Bounded at 1,000,000 sessions (the
/// least used are forgotten first, and then count as never seen).
pub struct SessionsSeen {
    cache: moka::sync::Cache<String, Seen>,
}

/// What was seen of one session.
#[derive(Clone)]
enum Seen {
    /// Used last at this instant, on this route.
    Active(Instant, Arc<str>),
    /// Ended by its client (DELETE), or idle too long.
    Ended,
}

impl Default for SessionsSeen {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
        }
    }
}

impl SessionsSeen {
    /// Records a use of `token` on `route` now.
    ///
    /// # Errors
    /// Why it may not be used: it was ended, or it was last used longer
    /// than `idle` ago (it is ended then).
    pub fn touch(&self, token: &str, route: &Arc<str>, idle: Duration) -> Result<(), String> {
        match self.cache.get(token) {
            Some(Seen::Ended) => return Err("the session was ended".into()),
            Some(Seen::Active(last, _)) if last.elapsed() > idle => {
                self.cache.insert(token.to_string(), Seen::Ended);
                return Err("the session was idle longer than session_idle_timeout_ms".into());
            }
            _ => {}
        }
        self.cache.insert(
            token.to_string(),
            Seen::Active(Instant::now(), Arc::clone(route)),
        );
        Ok(())
    }

    /// Ends `token`: it will not be served again.
    pub fn end(&self, token: &str) {
        self.cache.insert(token.to_string(), Seen::Ended);
    }

    /// How many sessions of `route` were used within `idle`.
    pub fn active(&self, route: &str, idle: Duration) -> usize {
        self.cache
            .iter()
            .filter(|(_, seen)| {
                matches!(seen, Seen::Active(at, r) if &**r == route && at.elapsed() <= idle)
            })
            .count()
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("mcp_sessions.key_file `{}`: {e}", path.display()))
}

/// A key: 64 hex digits, or base64 of 32 bytes.
fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        STANDARD
            .decode(text)
            .map_err(|e| format!("neither 64 hex digits nor base64: {e}"))?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes; an AES-256 key is 32", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            route: "* /mcp".into(),
            issued_ms: 1,
            protocol: "2025-06-18".into(),
            upstreams: vec![UpstreamSession {
                target: "docs".into(),
                pinned: Some(Pinned {
                    instance: "http://127.0.0.1:9001".into(),
                    session: "abc".into(),
                }),
                protocol: "2025-06-18".into(),
            }],
            client: Some(("inspector".into(), "1.0".into())),
            principal: Some("jwt:ann".into()),
        }
    }

    #[test]
    fn a_sealed_session_opens_with_any_accepted_key_and_with_no_other() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let token = SessionKeys::new(&[old]).seal(&state());
        assert_eq!(SessionKeys::new(&[new, old]).open(&token), Some(state()));
        assert_eq!(SessionKeys::new(&[new]).open(&token), None);
        // Two seals of one state differ (fresh nonces).
        assert_ne!(token, SessionKeys::new(&[old]).seal(&state()));
    }

    #[test]
    fn an_altered_token_does_not_open() {
        let keys = SessionKeys::new(&[[7u8; 32]]);
        let token = keys.seal(&state());
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(keys.open(&URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(keys.open("not a token"), None);
        assert_eq!(keys.open(""), None);
    }

    #[test]
    fn an_ended_or_idle_session_is_not_served_again() {
        let seen = SessionsSeen::default();
        let route: Arc<str> = Arc::from("* /mcp");
        let long = Duration::from_secs(60);
        assert_eq!(seen.touch("a", &route, long), Ok(()));
        assert_eq!(seen.touch("b", &route, long), Ok(()));
        assert_eq!(seen.active("* /mcp", long), 2);
        seen.end("a");
        assert!(seen.touch("a", &route, long).is_err());
        // Idle past the bound: refused, and from then on.
        assert!(seen.touch("b", &route, Duration::ZERO).is_err());
        assert!(seen.touch("b", &route, long).is_err());
        assert_eq!(seen.active("* /mcp", long), 0);
    }

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        assert_eq!(parse_key(&"ab".repeat(32)), Ok([0xab; 32]));
        assert_eq!(parse_key(&STANDARD.encode([3u8; 32])), Ok([3; 32]));
        assert!(
            parse_key(&STANDARD.encode([3u8; 16]))
                .unwrap_err()
                .contains("16 bytes")
        );
        assert!(parse_key("zz").is_err());
    }
}
