use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Key id recorded on rows whose identifiers were stored raw (operator opt-in).
pub const RAW_KEY_ID: &str = "raw";

/// Turns a raw user identifier into the value that is stored.
pub trait Pseudonymizer: Send + Sync {
    /// The id of the key in use, recorded on each row so keys can rotate.
    fn key_id(&self) -> &str;
    /// The stored form of `raw`.
    fn apply(&self, raw: &str) -> String;
}

/// HMAC-SHA256 with a per-project secret, truncated to 128 bits and hex-encoded.
///
/// 128 bits keep collisions negligible (birthday bound ~2^64 ids) while halving storage
/// against the full digest. Without the secret the mapping cannot be reversed or recomputed.
pub struct KeyedPseudonymizer {
    key_id: String,
    mac: Hmac<Sha256>,
}

impl KeyedPseudonymizer {
    /// A pseudonymizer for `secret` (any length) recorded as `key_id`.
    pub fn new(key_id: impl Into<String>, secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        KeyedPseudonymizer {
            key_id: key_id.into(),
            mac,
        }
    }
}

impl Pseudonymizer for KeyedPseudonymizer {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn apply(&self, raw: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(raw.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 32];
        // Cannot fail: the output is exactly twice the input's length.
        let _ = hex::encode_to_slice(&digest[..16], &mut out);
        // Hex digits are ASCII, so this borrows and copies once.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Identity mapping, used only when the operator opts in with `--store-raw-ids`.
pub struct RawIds;

impl Pseudonymizer for RawIds {
    fn key_id(&self) -> &str {
        RAW_KEY_ID
    }
    fn apply(&self, raw: &str) -> String {
        raw.to_string()
    }
}

/// For events whose identifiers were pseudonymized already (a quarantined event being
/// replayed): keeps the values and records the key they were made with.
pub struct AlreadyPseudonymized(pub String);

impl Pseudonymizer for AlreadyPseudonymized {
    fn key_id(&self) -> &str {
        &self.0
    }
    fn apply(&self, raw: &str) -> String {
        raw.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2_prefix() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let p = KeyedPseudonymizer::new("k1", b"Jefe");
        assert_eq!(
            p.apply("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
        assert_eq!(p.key_id(), "k1");
    }

    #[test]
    fn different_keys_give_different_values() {
        let a = KeyedPseudonymizer::new("a", b"secret-a");
        let b = KeyedPseudonymizer::new("b", b"secret-b");
        assert_ne!(a.apply("user-1"), b.apply("user-1"));
        assert_eq!(a.apply("user-1"), a.apply("user-1"));
    }
}
