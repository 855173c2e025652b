//! API key texts: making them, hashing them, and recognising a presented one.
//!
//! A key is `ctxd_` followed by 256 random bits in unpadded base64url (43 characters). Only
//! its SHA-256 is kept; the key's public id is the hash's first 12 hex digits, so a presented
//! key is found by id and then compared with the stored hash in full, in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with, so that leaked keys are recognisable (secret scanners).
pub const KEY_PREFIX: &str = "ctxd_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// Length of a key's text.
const KEY_LEN: usize = KEY_PREFIX.len() + 43;
/// Hex digits of the hash that make a key's id.
const ID_LEN: usize = 12;

/// A key's text, made once and shown once.
pub struct NewKey {
    /// The whole key, for the caller to keep.
    pub text: String,
    /// Its SHA-256.
    pub hash: [u8; 32],
    /// Its public id.
    pub id: String,
}

/// Makes a new key from the operating system's random source.
pub fn generate() -> Result<NewKey, String> {
    let mut random = [0u8; KEY_BYTES];
    getrandom::fill(&mut random).map_err(|e| format!("cannot read random bytes for a key: {e}"))?;
    let text = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let hash = hash(&text);
    Ok(NewKey {
        id: key_id(&hash),
        text,
        hash,
    })
}

/// SHA-256 of a key's text.
pub fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The public id of the key with this hash.
pub fn key_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..ID_LEN / 2])
}

/// Whether `text` has the shape of a key (it may still be unknown).
pub fn is_well_formed(text: &str) -> bool {
    text.len() == KEY_LEN
        && text.starts_with(KEY_PREFIX)
        && text[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a presented key's hash is the stored one, in time independent of where they differ.
pub fn hashes_match(presented: &[u8; 32], stored: &[u8; 32]) -> bool {
    presented.ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_found_by_their_hash() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.text, b.text);
        assert!(is_well_formed(&a.text), "{}", a.text);
        assert_eq!(a.text.len(), 48);
        assert_eq!(a.id, key_id(&hash(&a.text)));
        assert_eq!(a.id.len(), 12);
        assert!(hashes_match(&hash(&a.text), &a.hash));
        assert!(!hashes_match(&hash(&b.text), &a.hash));
    }

    #[test]
    fn shapes() {
        assert!(!is_well_formed("ctxd_short"));
        assert!(!is_well_formed(&format!("xxxx_{}", "a".repeat(43))));
        assert!(!is_well_formed(&format!("ctxd_{}", "a+".repeat(21) + "a")));
        assert!(is_well_formed(&format!("ctxd_{}", "a-_".repeat(14) + "a")));
    }
}
