//! Cache keys: 32-byte SHA-256 digests, written `sha256:<hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 cache key. Displays and serialises as `sha256:<64 lowercase hex>`.
///
/// The solver never builds keys itself: the worker derives them (normally with
/// [`Key::derive`]) from what determines a node's result, and the solver stores values
/// under them unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// A string that is not `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cache key {input:?}: expected \"sha256:\" and 64 lowercase hex digits")]
pub struct ParseKeyError {
    /// The rejected text.
    pub input: String,
}

impl Key {
    /// Wraps a raw digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The canonical way for workers to compose a key:
    /// `SHA-256(len(domain) || domain || len(part_0) || part_0 || ...)`, every length a
    /// little-endian `u64`.
    ///
    /// The length prefixes make the encoding injective: `["ab", "c"]` and `["a", "bc"]`
    /// give different keys, and so do different domains with the same parts. The domain
    /// names the kind of thing being keyed and its encoding version (for example
    /// `"kiln.exec.v1"`), so that a change of encoding changes every key of that kind.
    pub fn derive(domain: &str, parts: &[&[u8]]) -> Key {
        let mut h = Sha256::new();
        h.update((domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Key(h.finalize().into())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Key {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Key, ParseKeyError> {
        let err = || ParseKeyError {
            input: s.to_owned(),
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(err)?;
        Key::from_hex(hex_part).ok_or_else(err)
    }
}

impl Key {
    /// Parses exactly 64 lowercase hex digits (the form [`Key::to_hex`] writes).
    pub fn from_hex(s: &str) -> Option<Key> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Key(out))
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_matches_reference_vector() {
        // Computed independently with Python's hashlib over the documented encoding.
        let k = Key::derive("kiln.test.v1", &[b"hello", b""]);
        assert_eq!(
            k.to_string(),
            "sha256:2637fd7d23909b9dd0dbca40d4efcc261085ccf641c3649855191008f34ad2ef"
        );
    }

    #[test]
    fn derive_is_injective_over_part_boundaries_and_domains() {
        let a = Key::derive("d", &[b"ab", b"c"]);
        let b = Key::derive("d", &[b"a", b"bc"]);
        let c = Key::derive("d", &[b"abc"]);
        let d = Key::derive("e", &[b"ab", b"c"]);
        let e = Key::derive("d", &[b"ab", b"c", b""]);
        let all = [a, b, c, d, e];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn display_parse_and_serde_round_trip() {
        let k = Key::derive("x", &[b"y"]);
        let s = k.to_string();
        assert!(s.starts_with("sha256:") && s.len() == 7 + 64);
        assert_eq!(s.parse::<Key>(), Ok(k));
        let json = serde_json::to_string(&k).expect("serialise key");
        assert_eq!(json, format!("\"{s}\""));
        let back: Key = serde_json::from_str(&json).expect("deserialise key");
        assert_eq!(back, k);
    }

    #[test]
    fn bad_text_is_rejected() {
        let hex64 = "ab".repeat(32);
        for bad in [
            String::new(),
            hex64.clone(),
            format!("sha512:{hex64}"),
            format!("sha256:{}", &hex64[..62]),
            format!("sha256:{hex64}00"),
            format!("sha256:{}", hex64.to_uppercase()),
            format!("sha256:{}zz", &hex64[..62]),
        ] {
            assert!(bad.parse::<Key>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<Key>("\"sha256:00\"").is_err());
    }
}
