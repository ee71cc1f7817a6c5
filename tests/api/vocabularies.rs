//! The vocabularies tied to the database: every `CHECK` list of a vocabulary column holds exactly
//! the Rust enum's values, and the columns a mapping can write (`mapping::columns`) are exactly the
//! external tables' own columns, read from the catalog, so neither side can drift alone.

use std::collections::BTreeSet;

use syncbridge::{
    domain::{
        BatchState, DataType, FailureReason, IntegrationStatus, MatchMethod, MissedTicks,
        OnRunning, SourceType, SweepState, SyncMode, SyncStatus, SyncTrigger, TickOutcome,
    },
    mapping,
};

use crate::helpers::TestDb;

fn names<T: Copy>(all: &[T], text: fn(T) -> &'static str) -> BTreeSet<String> {
    all.iter().map(|v| text(*v).to_string()).collect()
}

/// The quoted values of the CHECK constraint on `table.column`.
async fn check_values(db: &TestDb, table: &str, column: &str) -> BTreeSet<String> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
         WHERE c.conrelid = $1::regclass AND c.contype = 'c'
           AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute
                                 WHERE attrelid = $1::regclass AND attname = $2)]",
    )
    .bind(table)
    .bind(column)
    .fetch_all(&mut db.owner().await)
    .await
    .unwrap();
    assert_eq!(defs.len(), 1, "{table}.{column}: one CHECK, found {defs:?}");
    defs[0]
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn every_check_list_is_its_enum() {
    let db = TestDb::migrated().await;
    let cases: Vec<(&str, &str, BTreeSet<String>)> = vec![
        (
            "external_contacts",
            "match_method",
            names(MatchMethod::ALL, MatchMethod::as_str),
        ),
        (
            "external_tickets",
            "match_method",
            names(MatchMethod::ALL, MatchMethod::as_str),
        ),
        (
            "external_deals",
            "match_method",
            names(MatchMethod::ALL, MatchMethod::as_str),
        ),
        (
            "integration_sources",
            "source_type",
            names(SourceType::ALL, SourceType::as_str),
        ),
        (
            "integration_sources",
            "status",
            names(IntegrationStatus::ALL, IntegrationStatus::as_str),
        ),
        (
            "integration_sources",
            "sync_mode",
            names(SyncMode::ALL, SyncMode::as_str),
        ),
        (
            "integration_sources",
            "sync_missed_ticks",
            names(MissedTicks::ALL, MissedTicks::as_str),
        ),
        (
            "integration_sources",
            "sync_on_running",
            names(OnRunning::ALL, OnRunning::as_str),
        ),
        (
            "integration_sync_logs",
            "trigger",
            names(SyncTrigger::ALL, SyncTrigger::as_str),
        ),
        (
            "integration_sync_logs",
            "status",
            names(SyncStatus::ALL, SyncStatus::as_str),
        ),
        (
            "integration_sync_logs",
            "failure_reason",
            names(FailureReason::ALL, FailureReason::as_str),
        ),
        (
            "integration_sync_logs",
            "sync_mode",
            names(SyncMode::ALL, SyncMode::as_str),
        ),
        (
            "integration_sync_logs",
            "data_type",
            names(DataType::ALL, DataType::as_str),
        ),
        (
            "ingest_batches",
            "state",
            names(BatchState::ALL, BatchState::as_str),
        ),
        (
            "ingest_batches",
            "data_type",
            names(DataType::ALL, DataType::as_str),
        ),
        (
            "integration_schedule_ticks",
            "outcome",
            names(TickOutcome::ALL, TickOutcome::as_str),
        ),
        (
            "integration_cursors",
            "data_type",
            names(DataType::ALL, DataType::as_str),
        ),
        (
            "integration_sync_sweeps",
            "data_type",
            names(DataType::ALL, DataType::as_str),
        ),
        (
            "integration_sync_sweeps",
            "state",
            names(SweepState::ALL, SweepState::as_str),
        ),
    ];
    for (table, column, expected) in cases {
        assert_eq!(
            check_values(&db, table, column).await,
            expected,
            "{table}.{column}"
        );
    }
}

/// Columns of the external tables that no mapping target names: keys, bookkeeping, matching,
/// what is derived (`email_domain`, `requester_domain`), and `properties`, which `properties.<key>` targets fill.
const NOT_MAPPED: &[&str] = &[
    "properties",
    "email_domain",
    "requester_domain",
    "last_sync_log_id",
    "match_method",
    "id",
    "tenant_id",
    "integration_id",
    "external_id",
    "created_at",
    "updated_at",
    "deleted_at",
    "last_synced_at",
    "content_hash",
    "delivery_seq",
    "account_id",
    "match_reason",
    "raw",
];

#[tokio::test]
async fn the_mappable_columns_are_the_external_tables_columns() {
    let db = TestDb::migrated().await;
    for data_type in DataType::ALL {
        let table = syncbridge::db::external_rows::table(*data_type);
        let in_table: BTreeSet<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut db.owner().await)
        .await
        .unwrap()
        .into_iter()
        .filter(|c: &String| !NOT_MAPPED.contains(&c.as_str()))
        .collect();
        let mappable: BTreeSet<String> = mapping::columns(*data_type)
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(mappable, in_table, "{table}");
    }
}

/// The codes of the README's error tables (`| status | code | when |`): every backticked
/// snake_case word in the code column of their rows.
fn readme_error_codes() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut codes = BTreeSet::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| status | code |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let Some(code_column) = line.split('|').nth(2).filter(|_| in_table) else {
            continue;
        };
        for (i, part) in code_column.split('`').enumerate() {
            if i % 2 == 1 && part.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                codes.insert(part.to_string());
            }
        }
    }
    codes
}

/// Every error code the HTTP API can answer with (`ErrorCode`, the one list refusals are built
/// from) is documented in a README error table, and the tables document no other.
#[test]
fn the_readme_documents_every_error_code_and_no_other() {
    use syncbridge::http::error::ErrorCode;
    let in_code = names(ErrorCode::ALL, ErrorCode::as_str);
    let in_readme = readme_error_codes();
    let undocumented: Vec<_> = in_code.difference(&in_readme).collect();
    let unknown: Vec<_> = in_readme.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "codes the README's error tables lack: {undocumented:?}; codes they list that the API \
         never answers: {unknown:?}"
    );
}
