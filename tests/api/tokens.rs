//! Tenant API tokens: shown once, stored hashed, listed without their secret, checked when
//! presented (with their use recorded), revoked at once, never reachable from another tenant.

use syncbridge::admin::{
    self,
    tokens::{self, TokenPrincipal, TokenRefusal},
};
use uuid::Uuid;

use crate::{
    cli::{ok, syncbridge},
    helpers::{TestDb, count},
};

#[tokio::test]
async fn a_token_works_until_revoked_and_only_for_its_tenant() {
    let db = TestDb::migrated().await;
    let a = admin::create_tenant(&db.pool, "Alpha").await.unwrap();
    let b = admin::create_tenant(&db.pool, "Beta").await.unwrap();
    let backend = tokens::create(&db.pool, a.id, Some("  backend "), false)
        .await
        .unwrap();
    let reader = tokens::create(&db.pool, a.id, None, true).await.unwrap();
    assert!(backend.token.plaintext.starts_with(&backend.info.prefix));
    assert_eq!(backend.info.name.as_deref(), Some("backend"));

    // Listed newest first, with what an admin needs and never the secret.
    let listed = tokens::list(&db.pool, a.id).await.unwrap();
    let seen: Vec<(Uuid, bool)> = listed.iter().map(|t| (t.id, t.read_only)).collect();
    assert_eq!(seen, [(reader.info.id, true), (backend.info.id, false)]);
    assert!(
        listed
            .iter()
            .all(|t| t.last_used_at.is_none() && t.revoked_at.is_none())
    );
    let as_json = serde_json::to_string(&listed).unwrap();
    let secret = backend.token.plaintext.rsplit('_').next().unwrap();
    assert!(!as_json.contains(secret));
    let mut system = db.owner().await;
    sqlx::query("SET ROLE syncbridge_system")
        .execute(&mut system)
        .await
        .unwrap();
    assert_eq!(
        count(&mut system, "SELECT count(*) FROM tenant_api_tokens").await,
        2
    );
    let stored_in_clear = count(
        &mut system,
        format!(
            "SELECT count(*) FROM tenant_api_tokens t WHERE to_jsonb(t)::text LIKE '%{secret}%'"
        ),
    )
    .await;
    assert_eq!(stored_in_clear, 0, "only the hash is stored");
    assert!(tokens::list(&db.pool, b.id).await.unwrap().is_empty());

    // Presented: it speaks for its tenant, and its use is recorded.
    let principal = tokens::authenticate(&db.pool, &backend.token.plaintext)
        .await
        .unwrap();
    assert_eq!(
        principal,
        Ok(TokenPrincipal {
            token_id: backend.info.id,
            tenant_id: a.id,
            read_only: false,
        })
    );
    let reader_principal = tokens::authenticate(&db.pool, &reader.token.plaintext)
        .await
        .unwrap()
        .unwrap();
    assert!(reader_principal.read_only);
    let used = tokens::list(&db.pool, a.id).await.unwrap();
    assert!(used.iter().all(|t| t.last_used_at.is_some()));

    // Refusals: not one of ours, an integration key, a wrong secret.
    let key_of_an_integration = syncbridge::domain::api_key::NewApiKey::generate().plaintext;
    for (presented, refusal) in [
        ("hello".to_string(), TokenRefusal::Malformed),
        (key_of_an_integration, TokenRefusal::Malformed),
        (
            format!("{}_{}", backend.info.prefix, "x".repeat(40)),
            TokenRefusal::Unknown,
        ),
    ] {
        assert_eq!(
            tokens::authenticate(&db.pool, &presented).await.unwrap(),
            Err(refusal),
            "{presented}"
        );
    }

    // Another tenant cannot revoke it (nor learn that it exists); its own tenant can, at once.
    assert!(
        tokens::revoke(&db.pool, b.id, backend.info.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tokens::authenticate(&db.pool, &backend.token.plaintext)
            .await
            .unwrap()
            .is_ok()
    );
    let revoked = tokens::revoke(&db.pool, a.id, backend.info.id)
        .await
        .unwrap()
        .expect("its tenant revokes it");
    let first_revocation = revoked.revoked_at.expect("revoked_at is set");
    assert_eq!(
        tokens::authenticate(&db.pool, &backend.token.plaintext)
            .await
            .unwrap(),
        Err(TokenRefusal::Revoked)
    );
    let again = tokens::revoke(&db.pool, a.id, backend.info.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(first_revocation),
        "revoking twice keeps the first time"
    );
    assert!(
        tokens::authenticate(&db.pool, &reader.token.plaintext)
            .await
            .unwrap()
            .is_ok(),
        "the tenant's other token still works"
    );
}

#[tokio::test]
async fn the_tokens_commands_create_list_and_revoke() {
    let db = TestDb::migrated().await;
    ok(&db, &["tenants", "create", "Gamma"]);
    let token = ok(
        &db,
        &[
            "tokens",
            "create",
            "--tenant",
            "gamma",
            "--name",
            "backend",
            "--read-only",
        ],
    );
    assert!(token.starts_with("sbt_"), "{token}");

    let table = ok(&db, &["tokens", "list", "--tenant", "Gamma"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "id\tprefix\tname\taccess\tcreated\tlast_used\trevoked"
    );
    assert_eq!(lines.len(), 2);
    let fields: Vec<&str> = lines[1].split('\t').collect();
    assert!(token.starts_with(fields[1]));
    assert_eq!(
        (fields[2], fields[3], fields[6]),
        ("backend", "read-only", "-")
    );
    assert!(!table.contains(token.rsplit('_').next().unwrap()));

    let json = ok(&db, &["tokens", "list", "--tenant", "Gamma", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed["read_only"], true);
    let id = listed["id"].as_str().unwrap().to_string();

    ok(&db, &["tokens", "revoke", "--tenant", "Gamma", &id]);
    let json = ok(&db, &["tokens", "list", "--tenant", "Gamma", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(listed["revoked_at"].is_string(), "{listed}");

    let unknown = syncbridge(
        &db,
        &[
            "tokens",
            "revoke",
            "--tenant",
            "Gamma",
            &Uuid::new_v4().to_string(),
        ],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no token"));
}
