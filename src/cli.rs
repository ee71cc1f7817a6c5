//! The command line: process roles (`serve`, `web`, `worker`, `scheduler`, `migrate`) and the
//! bootstrap commands an operator needs from the first day.

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::domain::{DataType, MissedTicks, OnRunning, SourceType, SyncMode};

#[derive(Debug, Parser)]
#[command(
    name = "syncbridge",
    version,
    about = "Brings customer data delivered by n8n into the customer-success platform"
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Web, worker and scheduler in one process (development and small installs); migrates first.
    Serve,
    /// The HTTP API only.
    Web,
    /// The job worker only.
    Worker,
    /// The sync scheduler only.
    Scheduler,
    /// Applies pending database migrations and exits (the Procfile's release step).
    Migrate,
    /// Tenants: the customers of the platform, isolated from each other.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Integrations: one external system of one tenant.
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// API keys n8n presents when delivering to an integration.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A tenant's dashboard numbers (as `GET /api/v1/stats`), as JSON.
    Stats {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// The chart's window in days (1 to 90).
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Tenant API tokens the platform's backend calls the API with, on behalf of one tenant.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The tenant's customer accounts that records are matched to.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Background jobs: inspect, retry, cancel, pause queues.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Field mappings: how an integration's records become rows (presets plus overrides).
    #[command(subcommand)]
    Mappings(MappingsCommand),
    /// Starts a sync now: asks the integration's n8n workflow to run; prints the sync log id
    /// (with --wait: follows it with a progress bar until it closes).
    Sync(SyncArgs),
    /// A tenant's synced records (as `GET /api/v1/records/{type}`).
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Sync logs: list them, close an open one, replay a closed one from its stored chunks.
    #[command(subcommand)]
    Syncs(SyncsCommand),
    /// Delivered batches: discard one that cannot be processed.
    #[command(subcommand)]
    Batches(BatchesCommand),
}

#[derive(Debug, Subcommand)]
pub enum SyncsCommand {
    /// Lists sync logs, newest first: id, integration, trigger, mode, status, reason, created,
    /// batches processed/received, records received and failed.
    List {
        /// Only pending and running syncs.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        integration: Option<Uuid>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one sync as JSON (as `GET /api/v1/syncs/{id}`): every count and whether they add
    /// up, timing, its batches' progress and its first errors.
    Show {
        sync_log_id: Uuid,
        /// How many of its errors to include (the API pages the rest).
        #[arg(long, default_value_t = 50)]
        errors: i64,
    },
    /// Closes an open sync now (partial if it stored records, else failed; reason
    /// closed_by_admin), so the integration can sync again. Batches in flight still count.
    Close {
        sync_log_id: Uuid,
        /// Why, kept as the sync's error summary.
        #[arg(long)]
        reason: String,
    },
    /// Re-runs a closed sync's stored chunks (mapping, matching, upserts) as a new `replay` sync,
    /// without asking n8n; prints the new sync log id. Chunks are kept ingest.keep_chunks_days.
    Reprocess { sync_log_id: Uuid },
    /// Applies the sweep a full sync skipped because it saw fewer live rows than the
    /// integration's --sweep-min-seen share: soft-deletes the rows no delivery has seen since
    /// that sync started. Prints each data type's sweep.
    Sweep { sync_log_id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Gives up on a batch: cancels its unfinished jobs and counts its unprocessed records as
    /// failed (code batch_discarded), so it and its sync end. Retrying a cancelled job still
    /// processes its chunk.
    Discard {
        batch_id: Uuid,
        /// Why, kept in the batch's error rows.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The integration's id.
    pub integration: Uuid,
    /// incremental or full; default: the integration's setting.
    #[arg(long, value_parser = parse_sync_mode)]
    pub mode: Option<SyncMode>,
    /// Data types to sync, comma-separated; default: the integration's setting.
    #[arg(long, value_delimiter = ',', value_parser = parse_data_type)]
    pub data_types: Vec<DataType>,
    /// Start even while another sync of the integration is still open.
    #[arg(long)]
    pub force: bool,
    /// Repeat this failed or partial sync (trigger `retry`; its mode and data types by default).
    #[arg(long)]
    pub retry_of: Option<Uuid>,
    /// Follow the sync until it closes, with a progress bar on a terminal; the exit code is 0
    /// when it succeeded, 1 when it ended partial or failed (or --timeout passed first).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (the sync goes on).
    #[arg(long, requires = "wait")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Lists records in change order (by updated_at, then id): id, external id, integration,
    /// account and match method, email, domain, updated, deleted.
    List {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// contacts, tickets or deals.
        #[arg(value_parser = parse_data_type)]
        data_type: DataType,
        #[arg(long)]
        integration: Option<Uuid>,
        #[arg(long)]
        account: Option<Uuid>,
        /// Only records with this email (case-insensitive).
        #[arg(long)]
        email: Option<String>,
        /// Only records of this domain (case-insensitive).
        #[arg(long)]
        domain: Option<String>,
        /// Only records updated at or after this time (RFC 3339).
        #[arg(long)]
        updated_since: Option<chrono::DateTime<chrono::Utc>>,
        /// Soft-deleted records: exclude, include or only.
        #[arg(long, default_value = "exclude", value_parser = parse_deleted)]
        deleted: crate::admin::tenant_api::Deleted,
        /// How many to show at most (pages are read until then).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line (the API's record, without `raw`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one record as JSON, with `raw` (the record as the source sent it).
    Show {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        #[arg(value_parser = parse_data_type)]
        data_type: DataType,
        record: Uuid,
    },
}

/// The environment variable `integrations set` reads the n8n credential's secret from, so it
/// never appears in the shell history or the process list.
pub const N8N_SECRET_ENV: &str = "SYNCBRIDGE_N8N_AUTH_SECRET";

#[derive(Debug, Args)]
pub struct SetIntegration {
    /// The integration's id.
    pub integration: Uuid,
    /// A new name (unique within the tenant).
    #[arg(long)]
    pub name: Option<String>,
    /// A new description (`--description ""` removes it).
    #[arg(long)]
    pub description: Option<String>,
    /// The n8n Webhook trigger's URL (http or https) that starts this integration's workflow.
    #[arg(long, conflicts_with = "no_webhook_url")]
    pub webhook_url: Option<String>,
    #[arg(long)]
    pub no_webhook_url: bool,
    /// A cron expression (5 fields, or 6 with seconds first as the `cron` crate writes them) or
    /// a preset: @hourly, @daily, @weekly, every 15m, every 2h.
    #[arg(long, conflicts_with = "no_schedule")]
    pub schedule: Option<String>,
    /// Remove the schedule: the integration then syncs only when triggered.
    #[arg(long)]
    pub no_schedule: bool,
    /// IANA time zone the schedule runs in (default UTC), e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    #[arg(long, value_parser = parse_sync_mode)]
    pub mode: Option<SyncMode>,
    /// Data types each sync asks for, comma-separated (contacts,tickets,deals).
    #[arg(long, value_delimiter = ',', value_parser = parse_data_type)]
    pub data_types: Option<Vec<DataType>>,
    /// Ticks missed while no scheduler ran: skip, or run_latest (once).
    #[arg(long, value_parser = parse_missed)]
    pub missed: Option<MissedTicks>,
    /// A tick while a sync is still open: skip (recorded), or queue a new sync anyway.
    #[arg(long, value_parser = parse_on_running)]
    pub on_running: Option<OnRunning>,
    /// Spread ticks: each fires up to this many seconds late (a fixed offset per integration).
    #[arg(long)]
    pub jitter: Option<u32>,
    /// A full sync soft-deletes the rows it did not see only when it saw at least this percent
    /// of the integration's live rows of a data type (default 50; 0 turns the guard off).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub sweep_min_seen: Option<u8>,
    /// How syncbridge authenticates toward n8n: none, header (Header Auth) or basic.
    #[arg(long, value_parser = ["none", "header", "basic"])]
    pub auth: Option<String>,
    /// The header name (header) or user name (basic); the secret is read from the
    /// SYNCBRIDGE_N8N_AUTH_SECRET environment variable.
    #[arg(long)]
    pub auth_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Lists jobs, newest first.
    List {
        #[command(flatten)]
        filter: JobFilterArgs,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Makes jobs run again now: dead, cancelled, or waiting for a retry or a schedule.
    Retry {
        /// Job ids; or use --all-dead or a filter.
        ids: Vec<i64>,
        /// Every dead job (narrow it with --queue, --kind, --tag).
        #[arg(long)]
        all_dead: bool,
        #[command(flatten)]
        filter: JobFilterArgs,
    },
    /// Cancels jobs that have not finished.
    Cancel {
        /// Job ids; or use a filter.
        ids: Vec<i64>,
        #[command(flatten)]
        filter: JobFilterArgs,
    },
    /// Jobs per queue and state, and how long the oldest available job has waited.
    Stats {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stops workers from starting jobs of a queue.
    Pause { queue: String },
    /// Lets workers start jobs of a paused queue again.
    Resume { queue: String },
}

#[derive(Debug, Args, Default)]
pub struct JobFilterArgs {
    /// available, scheduled, running, retryable, completed, dead (= failed) or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
}

impl JobFilterArgs {
    /// The engine's filter; an unknown state is an error naming the valid ones.
    pub fn to_filter(&self, ids: &[i64]) -> Result<jobs::JobFilter, jobs::Error> {
        Ok(jobs::JobFilter {
            ids: ids.to_vec(),
            states: self
                .state
                .as_deref()
                .map(str::parse)
                .transpose()?
                .into_iter()
                .collect(),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            tag: self.tag.clone(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Creates a tenant and prints its id.
    Create { name: String },
    /// Lists tenants: id, name, created.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Creates an integration and prints its id.
    Create(CreateIntegration),
    /// Lists a tenant's integrations as `GET /api/v1/integrations` does: id, source, status,
    /// name, schedule, next tick, last sync (time and status), total syncs, live records by type.
    List {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deletes an integration with its records, syncs, batches, errors, mappings and keys;
    /// prints what was removed.
    Delete { integration: Uuid },
    /// Sets (or rotates, or removes) the Standard Webhooks signing secret of an integration and
    /// prints the new secret once. While one is set, every delivery must be signed with it.
    /// Needs SYNCBRIDGE_ENCRYPTION_KEY: the secret is stored sealed.
    SigningSecret {
        #[arg(long)]
        integration: Uuid,
        /// Keep accepting the previous secret for this many hours, so n8n can switch over.
        #[arg(long, default_value_t = 24, conflicts_with = "remove")]
        keep_previous_hours: u32,
        /// Stop requiring signatures.
        #[arg(long)]
        remove: bool,
    },
    /// Pauses an integration: deliveries are refused (409) until it is resumed.
    Pause {
        #[arg(long)]
        integration: Uuid,
    },
    /// Resumes a paused integration.
    Resume {
        #[arg(long)]
        integration: Uuid,
    },
    /// Sets how and when the integration syncs: n8n webhook URL and credentials, schedule, mode.
    /// Prints the resulting settings (never the credentials).
    Set(SetIntegration),
}

#[derive(Debug, Args)]
pub struct CreateIntegration {
    /// Tenant id or name.
    #[arg(long)]
    pub tenant: String,
    /// The external system.
    #[arg(long, value_parser = parse_source_type)]
    pub source: SourceType,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MappingsCommand {
    /// Shows what the integration's mappings make of sample records, without writing anything.
    Preview {
        #[arg(long)]
        integration: Uuid,
        /// A webhook body (with `records`) or a JSON array of records.
        #[arg(long)]
        file: std::path::PathBuf,
        /// contacts, tickets or deals; default: the file's `data_type`.
        #[arg(long, value_parser = parse_data_type)]
        data_type: Option<DataType>,
    },
    /// Sets the mapping of one target (validated first; refused with the problem named).
    Set {
        #[arg(long)]
        integration: Uuid,
        #[arg(long, value_parser = parse_data_type)]
        data_type: DataType,
        /// A column (e.g. `email`), `external_id`, or `properties.<key>`.
        #[arg(long)]
        target: String,
        /// The mapping as JSON: `{"source": "properties.email", "ops": [{"op": "lowercase"}]}`.
        #[arg(long)]
        mapping: String,
    },
    /// Turns one preset target off for this integration.
    Disable {
        #[arg(long)]
        integration: Uuid,
        #[arg(long, value_parser = parse_data_type)]
        data_type: DataType,
        #[arg(long)]
        target: String,
    },
    /// Removes a stored mapping (the preset applies again).
    Remove {
        #[arg(long)]
        integration: Uuid,
        #[arg(long, value_parser = parse_data_type)]
        data_type: DataType,
        #[arg(long)]
        target: String,
    },
    /// Lists the stored mappings of an integration (the presets are in the README).
    List {
        #[arg(long)]
        integration: Uuid,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates an API key and prints it once; only its hash is stored.
    Create {
        #[arg(long)]
        integration: Uuid,
        /// A label to tell keys apart (e.g. "n8n production").
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists an integration's keys, newest first: id, prefix, name, created, last used, revoked.
    List {
        #[arg(long)]
        integration: Uuid,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key: deliveries with it are refused at once.
    Revoke {
        #[arg(long)]
        integration: Uuid,
        key: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Creates a tenant API token and prints it once; only its hash is stored.
    Create {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// A label to tell tokens apart (e.g. "platform backend").
        #[arg(long)]
        name: Option<String>,
        /// The token may read and change nothing.
        #[arg(long)]
        read_only: bool,
    },
    /// Lists the tenant's tokens, newest first: id, prefix, name, access, created, last used,
    /// revoked. Never the token itself.
    List {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: it stops working at once.
    Revoke {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// The token's id (from `tokens list`).
        token: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Adds a customer account and prints its id.
    Add {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// An email domain or website of the account; repeat for several.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Lists a tenant's accounts: id, name, domains, matched contacts, tickets and deals.
    List {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes an account; the records it matched are unmatched at once.
    Remove {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        account: Uuid,
    },
}

fn parse_source_type(s: &str) -> Result<SourceType, String> {
    s.parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| e.to_string())
}

fn parse_data_type(s: &str) -> Result<DataType, String> {
    s.parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| e.to_string())
}

fn parse_deleted(s: &str) -> Result<crate::admin::tenant_api::Deleted, String> {
    s.parse()
}

fn parse_sync_mode(s: &str) -> Result<SyncMode, String> {
    s.parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| e.to_string())
}

fn parse_missed(s: &str) -> Result<MissedTicks, String> {
    s.replace('-', "_")
        .parse()
        .map_err(|e: jobs::UnknownMissedTicks| e.to_string())
}

fn parse_on_running(s: &str) -> Result<OnRunning, String> {
    s.parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| e.to_string())
}

impl Command {
    /// Commands that run until stopped, as opposed to one-shot administration.
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Self::Serve | Self::Web | Self::Worker | Self::Scheduler
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["syncbridge"]).unwrap();
        assert!(cli.command.is_none());
    }

    #[test]
    fn unknown_source_type_is_refused_with_the_valid_ones() {
        let err = Cli::try_parse_from([
            "syncbridge",
            "integrations",
            "create",
            "--tenant",
            "t",
            "--source",
            "hubspt",
            "--name",
            "n",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("hubspot"), "{err}");
    }
}
