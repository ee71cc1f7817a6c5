//! SQL of the platform API's record reads, over the `api_records` view of the three external
//! tables (its migration says what it holds). Each function runs in the caller's transaction, so
//! its tenant's row level security decides what exists.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DataType, MatchMethod};

/// A stored record, as the platform API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Record {
    pub id: Uuid,
    pub data_type: DataType,
    pub integration_id: Uuid,
    pub external_id: String,
    /// The account it matched, and how (`match_reason` says why not, when it did not).
    pub account_id: Option<Uuid>,
    pub match_method: MatchMethod,
    pub match_reason: Option<String>,
    /// The email and domain it is searched by: a contact's, a ticket's requester's, a deal's
    /// contact and company's.
    pub email: Option<String>,
    pub domain: Option<String>,
    /// The type's typed columns.
    #[schema(value_type = Object)]
    pub fields: Value,
    /// Mapped values without a column of their own.
    #[schema(value_type = Object)]
    pub properties: Value,
    /// The record as the source sent it: only on the single-record route.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub raw: Option<Value>,
    pub last_sync_log_id: Option<Uuid>,
    /// Set when a full sync no longer saw it (soft-deleted).
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_synced_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Soft-deleted records: left out (the default), shown with the others, or alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deleted {
    #[default]
    Exclude,
    Include,
    Only,
}

impl std::str::FromStr for Deleted {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exclude" => Ok(Self::Exclude),
            "include" => Ok(Self::Include),
            "only" => Ok(Self::Only),
            other => Err(format!(
                "deleted must be `exclude`, `include` or `only`, not {other:?}"
            )),
        }
    }
}

/// Which records a page holds; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub integration_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    /// Case-insensitive.
    pub email: Option<String>,
    pub domain: Option<String>,
    /// Updated at or after.
    pub updated_since: Option<DateTime<Utc>>,
    pub deleted: Deleted,
}

/// Up to `limit` records of `data_type` matching `filter`, by (updated_at, id), after the
/// previous page's last: what changed since a point, in order, with no row twice or skipped
/// among those that do not change meanwhile (one that changes moves to the end).
pub async fn page(
    conn: &mut PgConnection,
    data_type: DataType,
    filter: &RecordFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    let (deleted_too, deleted_only) = match filter.deleted {
        Deleted::Exclude => (false, false),
        Deleted::Include => (true, false),
        Deleted::Only => (true, true),
    };
    sqlx::query_as!(
        Record,
        r#"SELECT id AS "id!", data_type AS "data_type!: DataType",
                  integration_id AS "integration_id!", external_id AS "external_id!", account_id,
                  match_method AS "match_method!: MatchMethod", match_reason, email, domain,
                  fields AS "fields!", properties AS "properties!", NULL::jsonb AS raw,
                  last_sync_log_id, deleted_at, last_synced_at AS "last_synced_at!",
                  created_at AS "created_at!", updated_at AS "updated_at!"
           FROM api_records
           WHERE data_type = $1
             AND ($2::uuid IS NULL OR integration_id = $2)
             AND ($3::uuid IS NULL OR account_id = $3)
             AND ($4::text IS NULL OR lower(email) = lower($4))
             AND ($5::text IS NULL OR lower(domain) = lower($5))
             AND ($6::timestamptz IS NULL OR updated_at >= $6)
             AND (deleted_at IS NULL OR $7) AND (deleted_at IS NOT NULL OR NOT $8)
             AND ($9::timestamptz IS NULL OR (updated_at, id) > ($9, $10::uuid))
           ORDER BY updated_at, id
           LIMIT $11"#,
        data_type.as_str(),
        filter.integration_id,
        filter.account_id,
        filter.email,
        filter.domain,
        filter.updated_since,
        deleted_too,
        deleted_only,
        after_at,
        after_id,
        limit
    )
    .fetch_all(conn)
    .await
}

/// One record of `data_type` by id, with its raw payload.
pub async fn one(
    conn: &mut PgConnection,
    data_type: DataType,
    id: Uuid,
) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as!(
        Record,
        r#"SELECT id AS "id!", data_type AS "data_type!: DataType",
                  integration_id AS "integration_id!", external_id AS "external_id!", account_id,
                  match_method AS "match_method!: MatchMethod", match_reason, email, domain,
                  fields AS "fields!", properties AS "properties!", raw,
                  last_sync_log_id, deleted_at, last_synced_at AS "last_synced_at!",
                  created_at AS "created_at!", updated_at AS "updated_at!"
           FROM api_records WHERE data_type = $1 AND id = $2"#,
        data_type.as_str(),
        id
    )
    .fetch_optional(conn)
    .await
}
