//! Platform JWTs on `/api/v1` through HTTP: an HS256 secret, RS256 and ES256 keys from a JWKS
//! file and from a JWKS URL (a real local server), the tenant read from a nested claim, and every
//! refusal answered 401 with its own code (503 when the key set cannot be had).

use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use reqwest::StatusCode;
use serde_json::{Value, json};
use syncbridge::config::Config;
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{self, TestApp, TestDb, code, get};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://idp.example.test/auth/v1";
const AUDIENCE: &str = "syncbridge";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims as the platform's identity provider issues them, the tenant in `app_metadata`.
fn claims(tenant: Uuid) -> Value {
    json!({
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "app_metadata": { "tenant_id": tenant.to_string() },
    })
}

fn with(mut claims: Value, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    change(claims.as_object_mut().unwrap());
    claims
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header, signed (or not) by hand: what an attacker sends.
fn forged(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

fn configure_jwt(config: &mut Config) {
    config.jwt.issuer = ISSUER.into();
    config.jwt.audience = vec![AUDIENCE.into(), "another-accepted".into()];
    config.jwt.tenant_claim = "app_metadata.tenant_id".into();
}

/// Each token is refused with its code (and a message), on a route any valid token may read.
async fn assert_refused(app: &TestApp, refused: Vec<(&str, String, &str)>) {
    for (what, token, expected) in refused {
        let (status, body) = get(app, "/api/v1/integrations", &token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, expected),
            "{what}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}

/// One signing key of the identity provider and its public JWK.
struct SigningKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    public: Value,
}

impl SigningKey {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn with_kid(&self, kid: &str) -> SigningKey {
        let mut public = self.public.clone();
        public["kid"] = json!(kid);
        SigningKey {
            alg: self.alg,
            kid: kid.into(),
            encoding: self.encoding.clone(),
            public,
        }
    }
}

fn signing_key(alg: Algorithm, kid: &str, encoding: EncodingKey) -> SigningKey {
    let mut public = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
    public["kid"] = json!(kid);
    public["use"] = json!("sig");
    SigningKey {
        alg,
        kid: kid.into(),
        encoding,
        public,
    }
}

/// An RSA key (made once per test run: generating one takes a while).
fn rsa_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let private = rsa::PrivateKey::new(&mut rand_010::rng(), 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        signing_key(
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    })
}

fn ec_key(kid: &str) -> SigningKey {
    use p256::{elliptic_curve::Generate, pkcs8::EncodePrivateKey};
    let private = p256::SecretKey::generate_from_rng(&mut rand_010::rng());
    let der = private.to_pkcs8_der().unwrap();
    signing_key(
        Algorithm::ES256,
        kid,
        EncodingKey::from_ec_der(der.as_bytes()),
    )
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public.clone()).collect::<Vec<_>>() })
}

#[tokio::test]
async fn an_hs256_token_speaks_for_the_tenant_its_claim_names_and_every_bad_one_is_refused_with_its_reason()
 {
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        configure_jwt(c);
        c.jwt.secret = Some(SECRET.to_string().into());
    })
    .await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let b = helpers::hubspot_integration(&app.db.pool, "Beta").await;
    let token = hs256(&claims(a.tenant_id), SECRET);

    let (status, body) = get(&app, "/api/v1/integrations", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.integration_id.to_string()]);
    let (status, body) = get(
        &app,
        &format!("/api/v1/integrations/{}", b.integration_id),
        &token,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "integration_not_found")
    );
    // A token's tenant may change its data too.
    let created = app
        .client
        .post(app.url("/api/v1/accounts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Acme", "domains": ["acme.example"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    // Any of the accepted audiences passes, also inside a list.
    let other_audience = with(claims(a.tenant_id), |c| {
        c.insert("aud".into(), json!(["elsewhere", "another-accepted"]));
    });
    let (status, _) = get(
        &app,
        "/api/v1/integrations",
        &hs256(&other_audience, SECRET),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let base = claims(a.tenant_id);
    let signed = |change: fn(&mut serde_json::Map<String, Value>)| {
        hs256(&with(base.clone(), change), SECRET)
    };
    let unsigned = forged(json!({"alg": "none", "typ": "JWT"}), &base, b"");
    let rs256_header = forged(json!({"alg": "RS256", "typ": "JWT"}), &base, b"sig");
    let refused: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "jwt_algorithm_refused"),
        (
            "RS256 where the secret is configured",
            rs256_header,
            "jwt_algorithm_refused",
        ),
        (
            "another secret",
            hs256(&base, "another-secret-of-at-least-32-bytes!!!"),
            "jwt_signature_invalid",
        ),
        (
            "expired an hour ago",
            signed(|c| {
                c.insert("exp".into(), json!(now() - 3600));
            }),
            "jwt_expired",
        ),
        (
            "not valid for another hour",
            signed(|c| {
                c.insert("nbf".into(), json!(now() + 3600));
            }),
            "jwt_not_yet_valid",
        ),
        (
            "for another audience",
            signed(|c| {
                c.insert("aud".into(), json!("another-service"));
            }),
            "jwt_audience_mismatch",
        ),
        (
            "from another issuer",
            signed(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
            "jwt_issuer_mismatch",
        ),
        (
            "without exp",
            signed(|c| {
                c.remove("exp");
            }),
            "jwt_claim_missing",
        ),
        (
            "without a tenant",
            signed(|c| {
                c.insert("app_metadata".into(), json!({ "role": "admin" }));
            }),
            "jwt_claim_missing",
        ),
        (
            "a tenant that is not a UUID",
            signed(|c| {
                c.insert("app_metadata".into(), json!({ "tenant_id": "alpha" }));
            }),
            "jwt_tenant_invalid",
        ),
        (
            "a tenant this install does not have",
            hs256(&claims(Uuid::new_v4()), SECRET),
            "jwt_tenant_invalid",
        ),
        (
            "not JSON inside",
            "eyJub3QganNvbg.eyJ9.c2ln".to_string(),
            "jwt_malformed",
        ),
    ];
    assert_refused(&app, refused).await;
    let (_, body) = get(
        &app,
        "/api/v1/integrations",
        &hs256(
            &with(base, |c| {
                c.remove("app_metadata");
            }),
            SECRET,
        ),
    )
    .await;
    assert_eq!(body["error"]["details"]["claim"], "app_metadata.tenant_id");

    // A JWT never opens the install-scope admin API.
    let (status, body) = get(&app, "/api/admin/jobs/stats", &token).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_admin_token"),
        "{body}"
    );
}

#[tokio::test]
async fn rs256_and_es256_keys_come_from_a_jwks_file_and_a_token_cannot_pick_another_key_or_algorithm()
 {
    let rsa = rsa_key();
    let ec = ec_key("ec-1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[rsa, &ec]).to_string()).unwrap();
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        configure_jwt(c);
        c.jwt.jwks_file = Some(file.clone());
    })
    .await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let claims = claims(a.tenant_id);

    for key in [rsa, &ec] {
        let (status, body) = get(&app, "/api/v1/integrations", &key.sign(&claims)).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {body}", key.alg);
        assert_eq!(body["data"][0]["id"], a.integration_id.to_string());
    }
    let unknown = ec_key("ec-unknown");
    let rsa_n = rsa.public["n"].as_str().unwrap();
    let refused = vec![
        (
            "a key the set does not have",
            unknown.sign(&claims),
            "jwt_key_unknown",
        ),
        (
            "a known key id, signed by another key",
            unknown.with_kid("ec-1").sign(&claims),
            "jwt_signature_invalid",
        ),
        (
            "the RSA key's id with ES256",
            ec.with_kid("rsa-1").sign(&claims),
            "jwt_algorithm_refused",
        ),
        (
            "HS256 with the public key as the secret (algorithm confusion)",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("rsa-1".into());
                jsonwebtoken::encode(
                    &header,
                    &claims,
                    &EncodingKey::from_secret(rsa_n.as_bytes()).unwrap(),
                )
                .unwrap()
            },
            "jwt_algorithm_refused",
        ),
        (
            "expired",
            ec.sign(&with(claims.clone(), |c| {
                c.insert("exp".into(), json!(now() - 3600));
            })),
            "jwt_expired",
        ),
    ];
    assert_refused(&app, refused).await;
}

#[test]
fn a_jwks_file_that_is_not_one_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    let mut settings = helpers::test_config().jwt;
    settings.jwks_file = Some(file.clone());
    let error = syncbridge::jwt::Verifier::new(&settings)
        .unwrap_err()
        .to_string();
    assert!(error.contains(&file.display().to_string()), "{error}");
    assert!(error.contains("no RSA, EC or OKP signing key"), "{error}");
    settings.jwks_file = Some(dir.path().join("missing.json"));
    assert!(syncbridge::jwt::Verifier::new(&settings).is_err());
}

#[tokio::test]
async fn a_jwks_url_is_fetched_when_needed_again_for_a_rotated_key_and_its_outage_is_a_503() {
    let provider = MockServer::start().await;
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        configure_jwt(c);
        c.jwt.jwks_url = Some(format!("{}/jwks.json", provider.uri()));
        c.jwt.jwks_refetch_min_secs = 0;
    })
    .await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let claims = claims(a.tenant_id);
    let first = ec_key("2026-11");
    let rotated = ec_key("2026-12");
    let fetches = || async { provider.received_requests().await.unwrap().len() };

    // The provider is down before anything was fetched: not the caller's fault.
    let (status, body) = get(&app, "/api/v1/integrations", &first.sign(&claims)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "jwks_unavailable"),
        "{body}"
    );

    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(&[&first])))
        .up_to_n_times(1)
        .mount(&provider)
        .await;
    let (status, body) = get(&app, "/api/v1/integrations", &first.sign(&claims)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after_first = fetches().await;
    // Cached: the next token with a known key costs no fetch.
    let (status, _) = get(&app, "/api/v1/integrations", &first.sign(&claims)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetches().await, after_first);

    // The provider rotates its keys: a token with the new key id makes one fetch and passes.
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(&[&first, &rotated])))
        .mount(&provider)
        .await;
    let (status, body) = get(&app, "/api/v1/integrations", &rotated.sign(&claims)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetches().await, after_first + 1);
    // A key id the provider does not have either: fetched once more, then refused.
    let (status, body) = get(
        &app,
        "/api/v1/integrations",
        &ec_key("made-up").sign(&claims),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "jwt_key_unknown")
    );
    assert_eq!(fetches().await, after_first + 2);
}

#[tokio::test]
async fn made_up_key_ids_cost_at_most_one_fetch_per_refetch_interval() {
    let provider = MockServer::start().await;
    let key = ec_key("only");
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(&[&key])))
        .mount(&provider)
        .await;
    let app = TestApp::spawn_configured(TestDb::migrated().await, None, |c| {
        configure_jwt(c);
        c.jwt.jwks_url = Some(format!("{}/jwks.json", provider.uri()));
    })
    .await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let claims = claims(a.tenant_id);
    let (status, _) = get(&app, "/api/v1/integrations", &key.sign(&claims)).await;
    assert_eq!(status, StatusCode::OK);
    for n in 0..5 {
        let (status, body) = get(
            &app,
            "/api/v1/integrations",
            &ec_key(&format!("made-up-{n}")).sign(&claims),
        )
        .await;
        assert_eq!(code(&body), "jwt_key_unknown", "{status} {body}");
    }
    assert_eq!(provider.received_requests().await.unwrap().len(), 1);
}

#[test]
fn jwt_settings_that_cannot_work_stop_the_start() {
    let mut config = helpers::test_config();
    config.jwt.secret = Some("short".to_string().into());
    assert!(config.jwt.problem().unwrap().contains("at least 32 bytes"));
    config.jwt.secret = Some(SECRET.to_string().into());
    config.jwt.jwks_url = Some("https://idp.example.test/jwks.json".into());
    assert!(config.jwt.problem().unwrap().contains("not several"));
    config.jwt.secret = None;
    config.jwt.jwks_url = Some("ftp://idp.example.test/jwks.json".into());
    assert!(config.jwt.problem().unwrap().contains("not an http(s) URL"));
    config.jwt.jwks_url = None;
    config.jwt.tenant_claim = " . ".into();
    assert!(config.jwt.problem().unwrap().contains("tenant_claim"));
}

#[tokio::test]
async fn a_jwt_where_jwt_authentication_is_off_is_refused_saying_so() {
    let app = TestApp::spawn().await;
    let a = helpers::hubspot_integration(&app.db.pool, "Alpha").await;
    let (status, body) = get(
        &app,
        "/api/v1/integrations",
        &hs256(&claims(a.tenant_id), SECRET),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JWT authentication is not configured")
    );
}
