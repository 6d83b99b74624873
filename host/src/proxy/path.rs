//! Path normalization before routing, as Envoy's HTTP connection manager
//! does with `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`: routes match, and upstreams get, the
//! path a client cannot disguise (`/api/../admin`, `/api/%2e%2e/admin`).
//!
//! In order: a `%` that does not start an escape of two hex digits is
//! refused (as nginx does: decoding around it could make a new escape, a
//! double-decoding hole); a `%00` is refused; an escaped slash (`%2F`, `%5C`) is refused
//! or kept (`escaped_slashes`); percent-encoded unreserved characters are
//! decoded (RFC 3986 §6.2.2.2) and hex digits of the rest upper-cased
//! (§6.2.2.1); runs of slashes are merged (`merge_slashes`); dot segments
//! are removed (§5.2.4 — `..` never climbs above the root). The query is
//! left as it is.

use std::borrow::Cow;

pub use crate::config::EscapedSlashes;

/// How a listener normalizes request paths (its `normalize_path`,
/// `merge_slashes` and `escaped_slashes` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Decode unreserved characters and remove dot segments.
    pub normalize: bool,
    /// Merge runs of slashes into one.
    pub merge_slashes: bool,
    /// Escaped slashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It contains `%00`.
    #[error("the path contains an encoded NUL (%00)")]
    Nul,
    /// A `%` does not start an escape of two hex digits.
    #[error("the path contains a `%` that is not followed by two hex digits")]
    BadEscape,
    /// It contains an escaped slash and the listener rejects them.
    #[error("the path contains an escaped slash (%2F or %5C)")]
    EscapedSlash,
}

/// `path` (no query) normalized by `rules`; borrowed when already normal.
///
/// # Errors
/// [`PathError`] for a path that is refused.
pub fn normalize<'a>(path: &'a str, rules: &PathRules) -> Result<Cow<'a, str>, PathError> {
    let bytes = path.as_bytes();
    let has_escape = bytes.contains(&b'%');
    if has_escape {
        check_escapes(bytes, rules)?;
    }
    let unusual = has_escape
        || (rules.merge_slashes && path.contains("//"))
        || (rules.normalize && has_dot_segment(path));
    if !unusual || !(rules.normalize || rules.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if rules.normalize && has_escape {
        decode_unreserved(path)
    } else {
        path.to_string()
    };
    let merged = if rules.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    let normal = if rules.normalize {
        remove_dot_segments(&merged)
    } else {
        merged
    };
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// Refuses `%00`, and escaped slashes when the rules say so.
fn check_escapes(bytes: &[u8], rules: &PathRules) -> Result<(), PathError> {
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        match escape_at(bytes, i) {
            None => return Err(PathError::BadEscape),
            Some(0) => return Err(PathError::Nul),
            Some(b'/' | b'\\') if rules.escaped_slashes == EscapedSlashes::Reject => {
                return Err(PathError::EscapedSlash);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The byte escaped at `i` (`%` and two hex digits), if one is.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = bytes.get(i + 1..i + 3)?;
    if bytes[i] != b'%' || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
}

/// Whether a segment of `path` is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// Decodes percent-encoded unreserved characters; other escapes keep their
/// encoding with upper-case hex digits (RFC 3986 §6.2.2).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(c));
                i += 3;
            }
            Some(c) => {
                out.push_str(&format!("%{c:02X}"));
                i += 3;
            }
            None => {
                // Not an escape (every `%` was checked to start one): the
                // byte as it is (the path is ASCII, as hyper checked).
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    out
}

/// `path` with every run of slashes made one.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments dropped, `..`
/// removes the segment before it (never the root); a path that ended in a
/// dot segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path.split('/').skip(1) {
        trailing = false;
        match segment {
            "." => trailing = true,
            ".." => {
                segments.pop();
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn normal(path: &str) -> Result<String, PathError> {
        normalize(path, &PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_and_their_encodings_are_resolved() {
        assert_eq!(normal("/api/../admin").unwrap(), "/admin");
        assert_eq!(normal("/api/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normal("/api/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(normal("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(normal("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(normal("/a/b/..").unwrap(), "/a/");
        assert_eq!(normal("/..").unwrap(), "/");
        assert_eq!(normal("/a..b/.c").unwrap(), "/a..b/.c");
    }

    #[test]
    fn slashes_merge_and_escaped_ones_are_refused_or_kept() {
        assert_eq!(normal("//api///v1//").unwrap(), "/api/v1/");
        assert_eq!(normal("/api/..%2fadmin"), Err(PathError::EscapedSlash));
        assert_eq!(normal("/a%5Cb"), Err(PathError::EscapedSlash));
        let keep = PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathRules::default()
        };
        assert_eq!(
            normalize("/api/..%2fadmin", &keep).unwrap(),
            "/api/..%2Fadmin"
        );
        let raw = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(normalize("/a//b", &raw).unwrap(), "/a//b");
    }

    #[test]
    fn nul_is_refused_and_other_escapes_are_kept_upper_case() {
        assert_eq!(normal("/a%00b"), Err(PathError::Nul));
        assert_eq!(normal("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normal("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normal("/%7euser").unwrap(), "/~user");
        assert_eq!(normal("/100%"), Err(PathError::BadEscape));
        // Found by fuzzing: decoding `%33` after a stray `%` made `%30`.
        assert_eq!(normal("/%%330"), Err(PathError::BadEscape));
        assert_eq!(normal("/%zz"), Err(PathError::BadEscape));
        assert_eq!(normal("/%+1"), Err(PathError::BadEscape));
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        assert!(matches!(
            normalize("/api/v1/items", &PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A normalized path is absolute, has no dot segment and no empty
        /// segment but a trailing one, and normalizing it again changes
        /// nothing.
        #[test]
        fn normalizing_is_idempotent(path in "/[a-z./%0-9A-F]{0,24}") {
            if let Ok(once) = normal(&path) {
                prop_assert!(once.starts_with('/'));
                prop_assert!(!has_dot_segment(&once), "{once}");
                prop_assert!(!once.contains("//"), "{once}");
                prop_assert_eq!(normal(&once).unwrap(), once.clone());
            }
        }
    }
}
