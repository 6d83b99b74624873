//! Content codings (RFC 9110 §8.4.1): those the `compress` filter encodes
//! answers with, and those the `decompress` filter decodes request bodies
//! from (async-compression's streaming codecs).

/// A content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Zstandard (`zstd`, RFC 8878); the `compress` filter's level 3.
    Zstd,
    /// Brotli (`br`, RFC 7932); the `compress` filter's quality 4.
    Brotli,
    /// gzip (`gzip`, RFC 1952); the `compress` filter's level 1.
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token (RFC 9110 §8.4.1; zstd: RFC 8878).
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The coding named `token` (exactly as [`token`](Self::token) spells it).
    pub fn of(token: &str) -> Option<Self> {
        [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]
            .into_iter()
            .find(|e| e.token() == token)
    }
}

/// A request body to decode before it goes upstream: its coding, and the
/// most bytes it may decode to (413 past them: a decompression bomb's
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    /// The body's `Content-Encoding`.
    pub encoding: Encoding,
    /// The largest decoded body, bytes.
    pub max_decoded_bytes: u64,
}
