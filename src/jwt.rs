//! Platform JWTs: which tenant a bearer JWT from the platform's identity provider speaks for.
//!
//! The keys are an HS256 shared secret, or public keys (RS256, ES256, and the other asymmetric
//! algorithms) from a JWKS file (read at start) or a JWKS URL (fetched when first needed, again
//! every `jwks_refresh_secs`, and when a token names a key id not seen yet, at most once per
//! `jwks_refetch_min_secs`). A token must carry `exp`; `nbf` is honoured; issuer and audience
//! are checked when configured; the tenant id is read from a configured claim path such as
//! `app_metadata.tenant_id` (where Supabase puts custom claims). Signature and claim checks are
//! `jsonwebtoken`'s; this module chooses the key and the algorithm, never the token's header.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// How long one JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[jwt]` section: JWT authentication is on when a secret, a JWKS file or a JWKS URL is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The HS256 shared secret (`SYNCBRIDGE_JWT_SECRET`, at least 32 bytes).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A JWKS document on disk (RS256/ES256/… public keys).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document served over HTTP(S), e.g. `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `iss` a token must carry; empty: not checked.
    #[serde(default)]
    pub issuer: String,
    /// `aud` values accepted (a token naming any of them passes); empty: not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Dotted path of the claim holding the tenant id.
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// A URL key set is fetched again after this many seconds.
    pub jwks_refresh_secs: u64,
    /// ... and for an unknown key id, or after a failed fetch, no sooner than this many seconds
    /// after the last try, so tokens with made-up key ids cannot hammer the provider.
    pub jwks_refetch_min_secs: u64,
}

impl JwtSettings {
    /// Whether any key source is configured (JWT authentication is on).
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.jwks_file.is_some() || self.jwks_url.is_some()
    }

    /// What is wrong with the settings, if anything (checked when the configuration loads).
    pub fn problem(&self) -> Option<String> {
        let sources = [
            self.secret.is_some(),
            self.jwks_file.is_some(),
            self.jwks_url.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Some(
                "set one of SYNCBRIDGE_JWT_SECRET, jwt.jwks_file and jwt.jwks_url, not several"
                    .into(),
            );
        }
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 32)
        {
            return Some("SYNCBRIDGE_JWT_SECRET must be at least 32 bytes (256 bits)".into());
        }
        if let Some(url) = &self.jwks_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Some(format!("jwt.jwks_url {url:?} is not an http(s) URL")),
            }
        }
        if claim_path(&self.tenant_claim).is_empty() {
            return Some("jwt.tenant_claim must name a claim, e.g. `tenant_id`".into());
        }
        None
    }
}

fn claim_path(path: &str) -> Vec<String> {
    path.split('.')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("{0}")]
    AlgorithmRefused(String),
    #[error("{}", match .0 {
        Some(kid) => format!("no configured key has the token's key id {kid:?}"),
        None => "the token names no key id (`kid`) and not exactly one key fits its algorithm".into(),
    })]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired (`exp`)")]
    Expired,
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("the token's audience (`aud`) is not one this service accepts")]
    WrongAudience,
    #[error("the token's issuer (`iss`) is not the configured one")]
    WrongIssuer,
    /// A claim the token must carry (`exp`, `iss`, `aud`, or the tenant claim) is absent.
    #[error("the token has no `{0}` claim")]
    ClaimMissing(String),
    #[error("the `{claim}` claim is not a tenant id (a UUID): {value}")]
    TenantInvalid { claim: String, value: String },
    /// The key set could not be fetched and none is cached: the fault is not the caller's.
    #[error("the JWKS could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// Who a valid JWT speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPrincipal {
    pub tenant_id: Uuid,
    /// The `sub` claim (the platform's user), when present.
    pub subject: Option<String>,
}

/// Whether a bearer value has a JWT's shape (three base64url parts, a JSON header), so it is
/// checked as one rather than as a tenant token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// One usable key: the algorithm is the key's own (from its JWK `alg`, or its type and curve),
/// so a token cannot choose a weaker or confused one.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

enum Keys {
    Secret(DecodingKey),
    Fixed(Arc<Vec<Key>>),
    Remote(Remote),
}

struct Remote {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    refetch_min: Duration,
    state: tokio::sync::RwLock<RemoteState>,
    /// One fetch at a time; the others wait for it and use its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RemoteState {
    keys: Option<Arc<Vec<Key>>>,
    fetched_at: Option<Instant>,
    tried_at: Option<Instant>,
    failure: Option<String>,
}

/// Checks platform JWTs with the configured keys and claims.
pub struct Verifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Vec<String>,
    tenant_claim: Vec<String>,
    leeway_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.keys {
            Keys::Secret(_) => "secret".to_string(),
            Keys::Fixed(keys) => format!("{} keys from a file", keys.len()),
            Keys::Remote(remote) => format!("keys from {}", remote.url),
        };
        f.debug_struct("Verifier")
            .field("keys", &source)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    /// The verifier of the settings, `None` when JWT authentication is off. A JWKS file is read
    /// and parsed now, so a wrong one stops the start; a URL is fetched on first use, so an
    /// unreachable provider does not stop webhooks.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Option<Self>> {
        if let Some(problem) = settings.problem() {
            anyhow::bail!(problem);
        }
        let keys = if let Some(secret) = &settings.secret {
            Keys::Secret(DecodingKey::from_secret(secret.expose_secret().as_bytes())?)
        } else if let Some(path) = &settings.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("jwt.jwks_file {}: {e}", path.display()))?;
            let keys = parse_jwks(&text)
                .map_err(|e| anyhow::anyhow!("jwt.jwks_file {}: {e}", path.display()))?;
            Keys::Fixed(Arc::new(keys))
        } else if let Some(url) = &settings.jwks_url {
            Keys::Remote(Remote {
                url: url.clone(),
                client: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
                refresh: Duration::from_secs(settings.jwks_refresh_secs.max(1)),
                refetch_min: Duration::from_secs(settings.jwks_refetch_min_secs),
                state: Default::default(),
                fetching: Default::default(),
            })
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            keys,
            issuer: Some(settings.issuer.trim().to_string()).filter(|s| !s.is_empty()),
            audience: settings.audience.clone(),
            tenant_claim: claim_path(&settings.tenant_claim),
            leeway_secs: settings.leeway_secs,
        }))
    }

    /// Checks `token` and names its tenant.
    pub async fn verify(&self, token: &str) -> Result<JwtPrincipal, JwtRefusal> {
        let header = peek_header(token)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtRefusal::Malformed("the header names no `alg`".into()))?;
        let kid = header.get("kid").and_then(Value::as_str);
        let alg: Algorithm = alg_name.parse().map_err(|_| {
            JwtRefusal::AlgorithmRefused(format!(
                "the algorithm {alg_name:?} is not accepted (unsigned tokens never are)"
            ))
        })?;
        let claims = match &self.keys {
            Keys::Secret(key) => {
                if alg != Algorithm::HS256 {
                    return Err(JwtRefusal::AlgorithmRefused(format!(
                        "tokens must be signed with HS256 (the shared secret), not {alg_name}"
                    )));
                }
                self.decode(token, key, alg)?
            }
            Keys::Fixed(keys) => {
                let key = choose(keys, kid, alg)?;
                self.decode(token, &key.key, key.alg)?
            }
            Keys::Remote(remote) => {
                let keys = remote.keys(kid).await?;
                let key = choose(&keys, kid, alg)?;
                self.decode(token, &key.key, key.alg)?
            }
        };
        self.principal(&claims)
    }

    fn decode(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, JwtRefusal> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        jsonwebtoken::decode::<Value>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.into_kind() {
                ErrorKind::ExpiredSignature => JwtRefusal::Expired,
                ErrorKind::ImmatureSignature => JwtRefusal::NotYetValid,
                ErrorKind::InvalidAudience => JwtRefusal::WrongAudience,
                ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
                ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
                ErrorKind::MissingRequiredClaim(claim) => JwtRefusal::ClaimMissing(claim),
                ErrorKind::InvalidAlgorithm => JwtRefusal::AlgorithmRefused(
                    "the key does not fit the token's algorithm".into(),
                ),
                other => JwtRefusal::Malformed(format!("{other:?}")),
            })
    }

    fn principal(&self, claims: &Value) -> Result<JwtPrincipal, JwtRefusal> {
        let path = self.tenant_claim.join(".");
        let value = self
            .tenant_claim
            .iter()
            .try_fold(claims, |at, name| at.get(name))
            .filter(|v| !v.is_null())
            .ok_or_else(|| JwtRefusal::ClaimMissing(path.clone()))?;
        let tenant_id = value
            .as_str()
            .and_then(|s| s.trim().parse::<Uuid>().ok())
            .ok_or_else(|| JwtRefusal::TenantInvalid {
                claim: path,
                value: value.to_string(),
            })?;
        let subject = claims.get("sub").and_then(Value::as_str).map(String::from);
        Ok(JwtPrincipal { tenant_id, subject })
    }
}

/// The token's header, decoded here (not by `jsonwebtoken`, which cannot even parse `none`) so
/// an unsigned or unknown algorithm gets its own answer.
fn peek_header(token: &str) -> Result<serde_json::Map<String, Value>, JwtRefusal> {
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| JwtRefusal::Malformed("the header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtRefusal::Malformed("the header is not a JSON object".into()))
}

/// The key for a token: the one with its key id, or, when the token names none, the only key of
/// its algorithm.
fn choose<'k>(keys: &'k [Key], kid: Option<&str>, alg: Algorithm) -> Result<&'k Key, JwtRefusal> {
    let key = match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut fitting = keys.iter().filter(|k| k.alg == alg);
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
    .ok_or_else(|| JwtRefusal::UnknownKey(kid.map(String::from)))?;
    if key.alg != alg {
        return Err(JwtRefusal::AlgorithmRefused(format!(
            "the key {:?} is for {:?}, the token says {alg:?}",
            key.kid.as_deref().unwrap_or(""),
            key.alg
        )));
    }
    Ok(key)
}

/// The usable keys of a JWKS document: signing keys of asymmetric algorithms. Symmetric (`oct`)
/// keys are left out: a published key set is public, and a secret in it would be anyone's.
fn parse_jwks(text: &str) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
    if keys.is_empty() {
        anyhow::bail!("the JWKS holds no RSA, EC or OKP signing key");
    }
    Ok(keys)
}

fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_)) => return None,
        (Some(declared), _) => Algorithm::try_from(declared).ok()?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
        (None, _) => return None,
    };
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

impl Remote {
    /// The key set, fetched when there is none, when it is older than the refresh interval, or
    /// when `kid` is not in it (each at most once per `refetch_min` after a try).
    async fn keys(&self, kid: Option<&str>) -> Result<Arc<Vec<Key>>, JwtRefusal> {
        if let Some(ready) = self.current(kid).await {
            return ready;
        }
        let _one_fetch = self.fetching.lock().await;
        // Whoever held the lock may have fetched what this request needs.
        if let Some(ready) = self.current(kid).await {
            return ready;
        }
        let fetched = self.fetch().await;
        let mut state = self.state.write().await;
        state.tried_at = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                state.keys = Some(keys.clone());
                state.fetched_at = state.tried_at;
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(jwks.url = %self.url, error.message = %e, "the JWKS could not be fetched");
                state.failure = Some(e.to_string());
                // Keys a little old beat no keys while the provider is down.
                state
                    .keys
                    .clone()
                    .ok_or_else(|| JwtRefusal::KeysUnavailable(e.to_string()))
            }
        }
    }

    /// What to answer without a fetch: the cached keys when they serve this request, the last
    /// failure when nothing is cached and a fetch was just tried; `None`: fetch.
    async fn current(&self, kid: Option<&str>) -> Option<Result<Arc<Vec<Key>>, JwtRefusal>> {
        let state = self.state.read().await;
        let recently_tried = state
            .tried_at
            .is_some_and(|at| at.elapsed() < self.refetch_min);
        let Some(keys) = state.keys.clone() else {
            return recently_tried.then(|| {
                Err(JwtRefusal::KeysUnavailable(
                    state.failure.clone().unwrap_or_default(),
                ))
            });
        };
        let fresh = state
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.refresh);
        let has_kid = kid.is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        (recently_tried || (fresh && has_kid)).then_some(Ok(keys))
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let response = self.client.get(&self.url).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("{} answered {status}", self.url);
        }
        parse_jwks(&response.text().await?)
    }
}
