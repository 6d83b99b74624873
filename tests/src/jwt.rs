//! Signing keys for JWT tests: an EC P-256 key pair made by rcgen, as the
//! PKCS#8 DER a test signs with and as the JWK (RFC 7518 §6.2) Switchyard
//! verifies with.

use base64::Engine as _;

/// A P-256 signing key.
pub struct SigningKey {
    /// The private key, PKCS#8 DER (jsonwebtoken's `EncodingKey::from_ec_der`).
    pub der: Vec<u8>,
    /// The public key as a JWK with `kid`, `alg: ES256`.
    pub jwk: serde_json::Value,
}

/// A new P-256 key named `kid`.
///
/// # Panics
/// When no key can be made (test set-up).
pub fn es256(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
    // The uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    SigningKey {
        der: pair.serialize_der(),
        jwk: serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..]),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        }),
    }
}
