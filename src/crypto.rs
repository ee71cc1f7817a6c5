//! Secrets at rest: AES-256-GCM sealing under the operator's key, and webhook signing secrets.
//!
//! A sealed value is `nonce (12 bytes) ‖ ciphertext+tag`, stored beside the id of the key that
//! sealed it, so keys can rotate later without guessing. The associated data names the row and
//! column a value belongs to: a ciphertext copied into another row does not open there.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "SYNCBRIDGE_ENCRYPTION_KEY must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error(
        "the value was sealed with key {0}, which is not the configured SYNCBRIDGE_ENCRYPTION_KEY"
    )]
    UnknownKey(String),
    #[error(
        "the sealed value does not open with the configured key (corrupt, or moved between rows)"
    )]
    Open,
    #[error("the sealed value is not valid: {0}")]
    Format(String),
}

/// Seals and opens secrets with the configured key.
#[derive(Clone)]
pub struct Sealer {
    key_id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let key = STANDARD
            .decode(encoded.trim())
            .map_err(|_| CryptoError::BadKey)?;
        if key.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        // The id is a fingerprint, not the key: 8 hex digits of its SHA-256.
        let key_id = hex::encode(&Sha256::digest(&key)[..4]);
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { key_id, cipher })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `plaintext` bound to `context` (e.g. `integration:<id>:signing_secret`).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, key_id: &str, sealed: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        if key_id != self.key_id {
            return Err(CryptoError::UnknownKey(key_id.to_string()));
        }
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Open)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Open)
    }
}

/// The associated data of an integration's signing secrets.
pub fn signing_secret_context(integration_id: uuid::Uuid) -> String {
    format!("integration:{integration_id}:signing_secret")
}

/// An integration's Standard Webhooks secrets: the current one, and during a rotation the
/// previous one until a deadline, so n8n can be switched over without refused deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningSecrets {
    pub current: String,
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub previous_until: Option<DateTime<Utc>>,
}

impl SigningSecrets {
    /// The secrets a delivery may be signed with at `now`, current first.
    pub fn accepted_at(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.current.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_until)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("signing secrets serialise")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        serde_json::from_slice(bytes).map_err(|e| CryptoError::Format(e.to_string()))
    }
}

/// A new `whsec_…` secret: 32 random bytes, base64, as the Standard Webhooks spec suggests.
pub fn generate_signing_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let s = sealer();
        let sealed = s.seal(b"whsec_abc", "integration:1:signing_secret");
        assert_ne!(&sealed[NONCE_LEN..], b"whsec_abc");
        assert_eq!(
            s.open(s.key_id(), &sealed, "integration:1:signing_secret")
                .unwrap(),
            b"whsec_abc"
        );
        assert!(matches!(
            s.open(s.key_id(), &sealed, "integration:2:signing_secret"),
            Err(CryptoError::Open)
        ));
        assert!(matches!(
            s.open("other", &sealed, "integration:1:signing_secret"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(Sealer::from_base64("short").is_err());
        assert!(Sealer::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn previous_secret_is_accepted_until_its_deadline() {
        let now = Utc::now();
        let secrets = SigningSecrets {
            current: "new".into(),
            previous: Some("old".into()),
            previous_until: Some(now + chrono::Duration::hours(1)),
        };
        assert_eq!(secrets.accepted_at(now), vec!["new", "old"]);
        assert_eq!(
            secrets.accepted_at(now + chrono::Duration::hours(2)),
            vec!["new"]
        );
    }
}
