//! Secret credentials we issue (integration API keys, tenant API tokens): how they are made, what
//! is stored of them, and how one is checked.
//!
//! A key looks like `<scheme>_<id>_<secret>`: `sbk` for an integration's key (n8n delivers with
//! it), `sbt` for a tenant's API token (the platform's backend calls with it), so neither is ever
//! taken for the other. `<scheme>_<id>` is its public prefix, stored in clear to find the row; the
//! whole key is stored only as its SHA-256. A slow password hash is not needed: the
//! secret part carries about 238 bits of randomness, so the hash cannot be brute-forced.

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a credential opens, named by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// An integration's webhook key (`sbk_…`).
    IntegrationKey,
    /// A tenant's API token (`sbt_…`).
    TenantToken,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::IntegrationKey => "sbk",
            Self::TenantToken => "sbt",
        }
    }
}

const ID_LEN: usize = 10;
const SECRET_LEN: usize = 40;

/// A freshly generated key: `plaintext` is shown once, then only `prefix` and `hash` are kept.
#[derive(Clone)]
pub struct NewApiKey {
    pub plaintext: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("prefix", &self.prefix)
            .field("plaintext", &"[REDACTED]")
            .finish()
    }
}

impl NewApiKey {
    /// A new integration key.
    pub fn generate() -> Self {
        Self::generate_for(Scheme::IntegrationKey)
    }

    /// A new credential of `scheme`.
    pub fn generate_for(scheme: Scheme) -> Self {
        let mut rng = rand::rng();
        let mut random = |n: usize| -> String {
            (&mut rng)
                .sample_iter(Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        let prefix = format!("{}_{}", scheme.as_str(), random(ID_LEN));
        let plaintext = format!("{prefix}_{}", random(SECRET_LEN));
        let hash = hash_key(&plaintext);
        Self {
            plaintext,
            prefix,
            hash,
        }
    }
}

/// The public prefix of a presented integration key, or `None` when it is not shaped like one.
pub fn prefix_of(presented: &str) -> Option<&str> {
    prefix_of_scheme(presented, Scheme::IntegrationKey)
}

/// The public prefix of a presented credential of `scheme`, or `None` when it is not shaped like
/// one.
pub fn prefix_of_scheme(presented: &str, scheme: Scheme) -> Option<&str> {
    let scheme = scheme.as_str();
    let prefix_len = scheme.len() + 1 + ID_LEN;
    let well_formed = presented.len() == prefix_len + 1 + SECRET_LEN
        && presented.is_char_boundary(prefix_len)
        && presented.starts_with(scheme)
        && presented.as_bytes()[scheme.len()] == b'_'
        && presented.as_bytes()[prefix_len] == b'_'
        && presented[scheme.len() + 1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    well_formed.then(|| &presented[..prefix_len])
}

/// A random secret of `len` letters and digits (about 5.95 bits each), e.g. a session's.
pub fn random_secret(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `presented` is the key whose stored hash is `stored_hash`, in constant time.
pub fn verify(presented: &str, stored_hash: &[u8]) -> bool {
    hash_key(presented).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_verifies_against_its_hash_and_exposes_its_prefix() {
        let key = NewApiKey::generate();
        assert!(verify(&key.plaintext, &key.hash));
        assert_eq!(prefix_of(&key.plaintext), Some(key.prefix.as_str()));
        assert!(key.plaintext.starts_with("sbk_"));
    }

    #[test]
    fn another_key_or_a_tampered_one_does_not_verify() {
        let key = NewApiKey::generate();
        let other = NewApiKey::generate();
        assert!(!verify(&other.plaintext, &key.hash));
        let mut tampered = key.plaintext.clone();
        tampered.pop();
        tampered.push('!');
        assert!(!verify(&tampered, &key.hash));
    }

    #[test]
    fn keys_are_unique() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert_ne!(a.prefix, b.prefix);
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "test-key",
            "sbk_short_x",
            "xyz_0123456789_0123456789012345678901234567890123456789",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = NewApiKey::generate();
        assert!(!format!("{key:?}").contains(&key.plaintext));
    }

    #[test]
    fn a_tenant_token_is_never_taken_for_an_integration_key_or_back() {
        let token = NewApiKey::generate_for(Scheme::TenantToken);
        assert!(token.plaintext.starts_with("sbt_"));
        assert_eq!(
            prefix_of_scheme(&token.plaintext, Scheme::TenantToken),
            Some(token.prefix.as_str())
        );
        assert_eq!(prefix_of(&token.plaintext), None);
        let key = NewApiKey::generate();
        assert_eq!(prefix_of_scheme(&key.plaintext, Scheme::TenantToken), None);
    }
}
