//! Turn receipts: what makes a retried turn recognizable.
//!
//! A turn request may carry an idempotency key. The turn's commit stores a receipt with it —
//! the key, a fingerprint of the request, and the outcome the client was told — in the same
//! transaction as the turn itself, so a receipt exists exactly when the turn does. A repeat
//! of the key on the session then gets that outcome instead of a second turn; a repeat with
//! a different request is refused, because it is a client bug, not a retry.

use std::time::SystemTime;

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A stored turn's receipt, kept per (tenant, session, key).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReceipt {
    /// The client's idempotency key.
    pub key: String,
    /// A fingerprint of the request that ran (message, context patch, tool results).
    pub fingerprint: String,
    /// The turn it ran.
    pub turn_id: String,
    /// The outcome as the engine encodes it (opaque to stores).
    pub outcome: String,
    /// When the turn was stored.
    pub create_time: SystemTime,
}

/// Checks an idempotency key: 1 to 128 printable ASCII characters (no spaces), the same
/// characters HTTP allows in an `Idempotency-Key` header without quoting.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "idempotency_key is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed",
            key.len()
        ));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "idempotency_key contains {bad:?}; use printable ASCII without spaces (a UUID is a good key)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(validate_idempotency_key("3f2c9a8e-retry-1").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(128)).is_ok());
        assert!(validate_idempotency_key(&"k".repeat(129)).is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key("naïve").is_err());
    }
}
