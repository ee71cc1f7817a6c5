//! Running syncbridge: locating the database, migrating, starting the chosen process roles,
//! shutting them down in order on SIGTERM or Ctrl-C, and the one-shot admin commands.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    admin,
    cli::{
        AccountsCommand, BatchesCommand, Command, IntegrationsCommand, JobsCommand, KeysCommand,
        MappingsCommand, SyncsCommand, TenantsCommand, TokensCommand,
    },
    config::Config,
    db::{self, Database, Readiness},
    http, scheduler, tasks, worker,
};

/// Which long-running parts a process runs.
#[derive(Debug, Clone, Copy)]
struct Roles {
    web: bool,
    worker: bool,
    scheduler: bool,
}

pub async fn run(command: Command, config: Config) -> Result<()> {
    let database = Database::locate(&config.database).await?;
    let result = run_on(&database, command, &config).await;
    // The embedded server is stopped whatever happened above.
    if let Err(e) = database.shutdown().await {
        tracing::error!(error.message = %format!("{e:#}"), "could not stop the embedded PostgreSQL");
    }
    result
}

async fn run_on(database: &Database, command: Command, config: &Config) -> Result<()> {
    // The embedded database is private to this installation, so every command may migrate it;
    // a shared server is migrated only by the release step (`migrate`) or `serve`.
    // An operator's command run from another directory than the service's would otherwise start
    // a new private database there and answer, truthfully, about an empty one.
    if database.created && !command.is_long_running() && !matches!(command, Command::Migrate) {
        let dir = std::path::absolute(&config.database.embedded.data_dir)
            .unwrap_or_else(|_| config.database.embedded.data_dir.clone());
        eprintln!(
            "note: there was no private database in {}, so a new, empty one was created: this \
             command sees none of the service's data. Run it in the directory the service runs \
             in, or set DATABASE_URL.",
            dir.display()
        );
    }
    let migrate_now =
        matches!(command, Command::Migrate | Command::Serve) || database.embedded.is_some();
    if migrate_now {
        db::migrate(&database.connect_options, &config.jobs.queue()).await?;
        tracing::info!("database migrations are applied");
    }
    if matches!(command, Command::Migrate) {
        return Ok(());
    }
    let pool = db::connect(database.connect_options.clone(), &config.database);
    let result = if command.is_long_running() {
        let roles = match command {
            Command::Web => Roles {
                web: true,
                worker: false,
                scheduler: false,
            },
            Command::Worker => Roles {
                web: false,
                worker: true,
                scheduler: false,
            },
            Command::Scheduler => Roles {
                web: false,
                worker: false,
                scheduler: true,
            },
            _ => Roles {
                web: true,
                worker: true,
                scheduler: true,
            },
        };
        run_roles(pool.clone(), roles, config).await
    } else {
        ensure_migrated(&pool, &config.jobs.queue()).await?;
        admin_command(&pool, command, config).await
    };
    pool.close().await;
    result
}

async fn run_roles(pool: PgPool, roles: Roles, config: &Config) -> Result<()> {
    // Built before any role takes a copy of the configuration, so that every role shares it.
    config.jobs.queue();
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let mut roles_running: JoinSet<Result<()>> = JoinSet::new();
    if config.metrics.enabled {
        crate::telemetry::metrics::install();
        crate::telemetry::metrics::configure(&config.metrics);
    }
    for address in config
        .metrics
        .listeners(roles.web, roles.worker, roles.scheduler)
    {
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        tracing::info!(metrics.address = %address, "metrics served on http://{address}/metrics");
        let app = http::metrics_router(pool.clone());
        let token = shutdown.clone();
        roles_running.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .context("the metrics listener failed")
        });
    }
    if roles.web {
        let listener = http::bind(&config.http).await?;
        let app = http::router(
            http::AppState::new(pool.clone(), config)?,
            Duration::from_secs(config.http.request_timeout_secs),
        );
        let grace = Duration::from_secs(config.http.shutdown_grace_secs);
        roles_running.spawn(http::serve(listener, app, shutdown.clone(), grace));
    }
    if roles.worker {
        let (pool, cfg, token) = (pool.clone(), config.clone(), shutdown.clone());
        roles_running.spawn(worker::run(pool, cfg, token));
    }
    if roles.scheduler {
        let (pool, token) = (pool.clone(), shutdown.clone());
        let settings = scheduler::SchedulerSettings::from_config(config);
        roles_running.spawn(async move {
            scheduler::run(pool, settings, token).await;
            Ok(())
        });
    }
    if roles.worker || roles.scheduler {
        // One maintenance participant per process; the database elects one leader among all.
        let maintenance = jobs::Maintenance::new(
            pool.clone(),
            tasks::maintenance_config(config),
            tasks::periodic(),
        )
        .with_sampler(crate::sync::OpenSyncs);
        let token = shutdown.clone();
        roles_running.spawn(async move {
            maintenance.run(token).await;
            Ok(())
        });
    }

    // A role that fails brings the others down with it rather than leaving half a process.
    let mut first_error = None;
    while let Some(joined) = roles_running.join_next().await {
        let outcome = joined.context("a process role panicked").and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error.message = %format!("{e:#}"), "a process role failed; shutting down");
            first_error.get_or_insert(e);
        }
        shutdown.cancel();
    }
    tracing::info!("syncbridge stopped");
    first_error.map_or(Ok(()), Err)
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error.message = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
        () = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

async fn ensure_migrated(pool: &PgPool, queue: &jobs::Queue) -> Result<()> {
    match db::readiness(pool, queue).await {
        Readiness::Ready => Ok(()),
        Readiness::MigrationsPending { applied, expected } => bail!(
            "the database has {applied} of {expected} migrations applied; run `syncbridge migrate` first"
        ),
        Readiness::Unreachable(reason) => bail!("the database cannot be reached: {reason}"),
    }
}

/// One-shot administration. Ids go to stdout (one per line, for scripts); explanations to stderr.
async fn admin_command(pool: &PgPool, command: Command, config: &Config) -> Result<()> {
    match command {
        Command::Tenants(TenantsCommand::Create { name }) => {
            let tenant = admin::create_tenant(pool, &name).await?;
            eprintln!("created tenant `{}`", tenant.name);
            println!("{}", tenant.id);
        }
        Command::Tenants(TenantsCommand::List { json }) => {
            let tenants = admin::list_tenants(pool).await?;
            print_rows(json, "id\tname\tcreated", &tenants, |t| {
                format!("{}\t{}\t{}", t.id, t.name, t.created_at.to_rfc3339())
            })?;
        }
        Command::Integrations(IntegrationsCommand::Create(args)) => {
            let tenant = admin::find_tenant(pool, &args.tenant).await?;
            let integration = admin::create_integration(
                pool,
                tenant.id,
                args.source,
                &args.name,
                args.description.as_deref(),
            )
            .await?;
            eprintln!(
                "created {} integration `{}` for tenant `{}`; next: syncbridge keys create --integration {}",
                integration.source_type, integration.name, tenant.name, integration.id
            );
            println!("{}", integration.id);
        }
        Command::Integrations(IntegrationsCommand::List { tenant, json }) => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let integrations = admin::tenant_api::integrations(pool, tenant.id).await?;
            print_rows(
                json,
                "id\tsource\tstatus\tname\tschedule\tnext_tick\tlast_sync\tlast_status\tsyncs\tcontacts\ttickets\tdeals",
                &integrations,
                |v| {
                    let i = &v.summary;
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        i.id,
                        i.source_type,
                        i.status,
                        i.name,
                        i.schedule.as_deref().unwrap_or("-"),
                        time(v.next_tick),
                        time(i.last_sync_at),
                        i.last_sync_status.map_or("-", |s| s.as_str()),
                        i.total_syncs,
                        i.contacts,
                        i.tickets,
                        i.deals
                    )
                },
            )?;
        }
        Command::Integrations(IntegrationsCommand::SigningSecret {
            integration,
            keep_previous_hours,
            remove,
        }) => {
            if remove {
                admin::remove_signing_secret(pool, integration).await?;
                eprintln!("integration {integration} no longer requires signed deliveries");
            } else {
                let key = config.encryption_key.as_ref().context(
                    "set SYNCBRIDGE_ENCRYPTION_KEY (32 random bytes, base64: `openssl rand -base64 32`) \
                     so the secret can be stored sealed",
                )?;
                let sealer =
                    crate::crypto::Sealer::from_base64(secrecy::ExposeSecret::expose_secret(key))?;
                let keep = chrono::Duration::hours(i64::from(keep_previous_hours));
                let secret = admin::set_signing_secret(pool, &sealer, integration, keep).await?;
                eprintln!(
                    "integration {integration} now requires Standard Webhooks signatures with this \
                     secret (shown once); a previous secret stays valid for {keep_previous_hours} h. \
                     See README, \"Signing deliveries from n8n\""
                );
                println!("{secret}");
            }
        }
        Command::Integrations(IntegrationsCommand::Pause { integration }) => {
            admin::set_integration_status(
                pool,
                integration,
                crate::domain::IntegrationStatus::Paused,
            )
            .await?;
            eprintln!("integration {integration} is paused");
        }
        Command::Integrations(IntegrationsCommand::Resume { integration }) => {
            admin::set_integration_status(
                pool,
                integration,
                crate::domain::IntegrationStatus::Active,
            )
            .await?;
            eprintln!("integration {integration} is active");
        }
        Command::Integrations(IntegrationsCommand::Set(args)) => {
            let settings = set_integration(pool, config, args).await?;
            eprintln!(
                "integration {} settings stored{}",
                settings.integration_id,
                settings
                    .next_tick
                    .map(|t| format!("; next scheduled sync {}", t.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{}", serde_json::to_string_pretty(&settings)?);
        }
        Command::Sync(args) => {
            let request = crate::sync::SyncRequest {
                trigger: crate::domain::SyncTrigger::Manual,
                sync_mode: args.mode,
                data_types: (!args.data_types.is_empty()).then_some(args.data_types),
                scheduled_for: None,
                retry_of: args.retry_of,
            };
            let (sync_log_id, job_id) = crate::sync::request_sync(
                pool,
                &config.jobs.queue(),
                None,
                args.integration,
                &request,
                args.force,
                config.n8n.trigger_attempts(),
            )
            .await?;
            eprintln!(
                "sync {sync_log_id} requested (trigger job {job_id}); a worker asks n8n to start it"
            );
            println!("{sync_log_id}");
            if args.wait {
                follow_sync(pool, args.integration, sync_log_id, args.timeout).await?;
            }
        }
        Command::Records(command) => records_command(pool, command).await?,
        Command::Mappings(command) => mappings_command(pool, command).await?,
        Command::Syncs(command) => syncs_command(pool, &config.jobs.queue(), command).await?,
        Command::Batches(BatchesCommand::Discard { batch_id, reason }) => {
            let Some(records) =
                crate::sync::chunk::discard_batch(pool, &config.jobs.queue(), batch_id, &reason)
                    .await?
            else {
                bail!("no batch {batch_id}");
            };
            eprintln!(
                "batch {batch_id} discarded: {records} unprocessed records counted as failed (batch_discarded)"
            );
            println!("{records}");
        }
        Command::Keys(KeysCommand::Create { integration, name }) => {
            let created = admin::create_api_key(pool, integration, name.as_deref()).await?;
            eprintln!(
                "created API key {} for integration {}; it is shown once and only its hash is stored. \
                 n8n sends it as `Authorization: Bearer <key>`",
                created.key.prefix, created.integration_id
            );
            println!("{}", created.key.plaintext);
        }
        Command::Tokens(command) => tokens_command(pool, command).await?,
        Command::Stats { tenant, days } => {
            if !(1..=90).contains(&days) {
                bail!("--days must be between 1 and 90");
            }
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let stats = admin::tenant_api::stats(pool, tenant.id, days).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        Command::Keys(KeysCommand::List { integration, json }) => {
            let found = admin::find_integration(pool, integration).await?;
            let keys = admin::tenant_api::keys(pool, found.tenant_id, integration)
                .await?
                .with_context(|| format!("no integration {integration}"))?;
            print_rows(
                json,
                "id\tprefix\tname\tcreated\tlast_used\trevoked",
                &keys,
                |k| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.prefix,
                        k.name.as_deref().unwrap_or("-"),
                        k.created_at.to_rfc3339(),
                        time(k.last_used_at),
                        time(k.revoked_at)
                    )
                },
            )?;
        }
        Command::Keys(KeysCommand::Revoke { integration, key }) => {
            let found = admin::find_integration(pool, integration).await?;
            let Some(revoked) =
                admin::tenant_api::revoke_key(pool, found.tenant_id, integration, key).await?
            else {
                bail!("integration {integration} has no key {key}");
            };
            eprintln!(
                "key {} revoked; deliveries with it are refused at once",
                revoked.prefix
            );
        }
        Command::Accounts(AccountsCommand::List { tenant, json }) => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let accounts = admin::tenant_api::accounts(pool, tenant.id).await?;
            print_rows(
                json,
                "id\tname\tdomains\tcontacts\ttickets\tdeals",
                &accounts,
                |a| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        a.id,
                        a.name,
                        a.domains.join(","),
                        a.contacts,
                        a.tickets,
                        a.deals
                    )
                },
            )?;
        }
        Command::Accounts(AccountsCommand::Remove { tenant, account }) => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let removed = admin::tenant_api::delete_account(pool, tenant.id, account)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "account `{}` removed; {} contacts, {} tickets and {} deals it matched are unmatched",
                removed.name, removed.contacts, removed.tickets, removed.deals
            );
        }
        Command::Integrations(IntegrationsCommand::Delete { integration }) => {
            let found = admin::find_integration(pool, integration).await?;
            let removed = admin::tenant_api::delete_integration(
                pool,
                &config.jobs.queue(),
                found.tenant_id,
                integration,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "integration `{}` deleted with everything it held",
                found.name
            );
            println!("{}", serde_json::to_string(&removed)?);
        }
        Command::Accounts(AccountsCommand::Add {
            tenant,
            name,
            domains,
        }) => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let account = admin::add_account(pool, tenant.id, &name, &domains).await?;
            eprintln!(
                "added account `{}` ({}) to tenant `{}`",
                account.name,
                account.domains.join(", "),
                tenant.name
            );
            println!("{}", account.id);
        }
        Command::Jobs(command) => jobs_command(pool, &config.jobs.queue(), command).await?,
        Command::Serve | Command::Web | Command::Worker | Command::Scheduler | Command::Migrate => {
            unreachable!("process roles are not admin commands")
        }
    }
    Ok(())
}

async fn set_integration(
    pool: &PgPool,
    config: &Config,
    args: crate::cli::SetIntegration,
) -> Result<crate::admin::settings::SyncSettings> {
    use crate::n8n::Credentials;
    let credentials = match args.auth.as_deref() {
        None => None,
        Some("none") => Some(Credentials::None),
        Some(kind) => {
            let name = args
                .auth_name
                .clone()
                .context("--auth header|basic needs --auth-name (the header or user name)")?;
            let secret = std::env::var(crate::cli::N8N_SECRET_ENV).with_context(|| {
                format!(
                    "put the secret in the {} environment variable (it is not taken from the \
                     command line, which the shell history and process list would keep)",
                    crate::cli::N8N_SECRET_ENV
                )
            })?;
            Some(if kind == "header" {
                Credentials::Header {
                    name,
                    value: secret,
                }
            } else {
                Credentials::Basic {
                    username: name,
                    password: secret,
                }
            })
        }
    };
    let change = crate::admin::settings::SettingsChange {
        webhook_url: if args.no_webhook_url {
            Some(None)
        } else {
            args.webhook_url.map(Some)
        },
        schedule: if args.no_schedule {
            Some(None)
        } else {
            args.schedule.map(Some)
        },
        timezone: args.timezone,
        sync_mode: args.mode,
        data_types: args.data_types,
        missed_ticks: args.missed,
        on_running: args.on_running,
        jitter_secs: args.jitter,
        sweep_min_seen_percent: args.sweep_min_seen,
        credentials,
    };
    let policy = crate::n8n::UrlPolicy::configured(&config.n8n)?;
    let sealer = config.sealer()?;
    let edit = crate::admin::settings::Edit {
        name: args.name.as_deref(),
        description: args.description.as_deref().map(Some),
        settings: &change,
        if_version: None,
    };
    Ok(
        crate::admin::settings::edit(pool, &policy, sealer.as_ref(), None, args.integration, edit)
            .await?,
    )
}

async fn syncs_command(pool: &PgPool, queue: &jobs::Queue, command: SyncsCommand) -> Result<()> {
    match command {
        SyncsCommand::List {
            open,
            integration,
            limit,
            json,
        } => {
            let syncs = crate::sync::list_syncs(pool, open, integration, limit).await?;
            print_rows(
                json,
                "id\tintegration\ttrigger\tmode\tstatus\treason\tcreated\tbatches\treceived\tfailed",
                &syncs,
                |s| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}/{}{}\t{}\t{}",
                        s.id,
                        s.integration_id,
                        s.trigger,
                        s.sync_mode,
                        s.status,
                        s.failure_reason.map_or("-", |r| r.as_str()),
                        s.created_at.to_rfc3339(),
                        s.batches_processed,
                        s.batches_received,
                        waiting_for(s),
                        s.records_received,
                        s.records_failed,
                    )
                },
            )?;
        }
        SyncsCommand::Close {
            sync_log_id,
            reason,
        } => {
            let status = crate::sync::close_open_sync(pool, None, sync_log_id, &reason).await?;
            eprintln!("sync {sync_log_id} closed as {status} (closed_by_admin)");
            println!("{status}");
        }
        SyncsCommand::Show {
            sync_log_id,
            errors,
        } => {
            let tenant_id = crate::sync::tenant_of_sync(pool, sync_log_id)
                .await?
                .with_context(|| format!("no sync log {sync_log_id}"))?;
            let detail = admin::tenant_api::sync_detail(
                pool,
                tenant_id,
                sync_log_id,
                errors.clamp(0, 10_000),
            )
            .await?
            .with_context(|| format!("no sync log {sync_log_id}"))?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        SyncsCommand::Reprocess { sync_log_id } => {
            let replay = crate::sync::replay::reprocess(pool, queue, None, sync_log_id).await?;
            eprintln!(
                "sync {sync_log_id} replayed as {}: {} batches, {} records in {} jobs",
                replay.sync_log_id, replay.batches, replay.records, replay.jobs
            );
            println!("{}", replay.sync_log_id);
        }
        SyncsCommand::Sweep { sync_log_id } => {
            let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            for sweep in crate::sync::apply_skipped_sweeps(pool, sync_log_id, &by).await? {
                println!(
                    "{}\t{}\t{} soft-deleted\t{} of {} live rows seen",
                    sweep.data_type,
                    sweep.state,
                    sweep.deleted_rows,
                    sweep.seen_rows,
                    sweep.live_rows
                );
            }
        }
    }
    Ok(())
}

/// What a sync still waits for, for the table of `syncs list`: the types whose final batch has
/// not come.
/// How often `sync --wait` reads the sync's counts.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Follows a sync until it closes (or `timeout_secs` pass), drawing its progress on a terminal:
/// records done of those received, and its batches. Fails unless it ended `success`, so a
/// script can tell.
async fn follow_sync(
    pool: &PgPool,
    integration_id: uuid::Uuid,
    sync_log_id: uuid::Uuid,
    timeout_secs: Option<u64>,
) -> Result<()> {
    let tenant_id = admin::find_integration(pool, integration_id)
        .await?
        .tenant_id;
    let deadline = timeout_secs.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} {wide_bar} {pos}/{len} records {msg} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let s = loop {
        let s = admin::tenant_api::sync_log(pool, tenant_id, sync_log_id)
            .await?
            .with_context(|| format!("sync {sync_log_id} is gone"))?;
        let done = s.records_created
            + s.records_updated
            + s.records_unchanged
            + s.records_skipped
            + s.records_failed;
        bar.set_prefix(s.status.to_string());
        bar.set_length(s.records_received.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        bar.set_message(format!(
            "· batches {}/{} · failed {}",
            s.batches_processed, s.batches_received, s.records_failed
        ));
        if !s.status.is_open() {
            break s;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            bar.abandon();
            bail!(
                "sync {sync_log_id} is still {} after {}s (it goes on; see `syncbridge syncs show {sync_log_id}`)",
                s.status,
                timeout_secs.unwrap_or_default()
            );
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    };
    bar.finish_and_clear();
    let took = s
        .completed_at
        .zip(s.started_at.or(Some(s.created_at)))
        .map(|(end, start)| {
            format!(
                " in {:.1}s",
                (end - start).num_milliseconds() as f64 / 1000.0
            )
        })
        .unwrap_or_default();
    eprintln!(
        "sync {sync_log_id} {}{took}: {} received, {} created, {} updated, {} unchanged, {} skipped, {} failed",
        s.status,
        s.records_received,
        s.records_created,
        s.records_updated,
        s.records_unchanged,
        s.records_skipped,
        s.records_failed
    );
    if s.status != crate::domain::SyncStatus::Success {
        bail!(
            "sync {sync_log_id} ended {}{}",
            s.status,
            s.failure_reason
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn records_command(pool: &PgPool, command: crate::cli::RecordsCommand) -> Result<()> {
    use crate::admin::tenant_api::{self, RecordFilter};
    match command {
        crate::cli::RecordsCommand::List {
            tenant,
            data_type,
            integration,
            account,
            email,
            domain,
            updated_since,
            deleted,
            limit,
            json,
        } => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let filter = RecordFilter {
                integration_id: integration,
                account_id: account,
                email,
                domain,
                updated_since,
                deleted,
            };
            let mut records = Vec::new();
            let mut after = None;
            // Pages of the API's largest size, each after the last one's final row.
            while (records.len() as i64) < limit {
                let want = (limit - records.len() as i64).min(200);
                let (page, more) =
                    tenant_api::records(pool, tenant.id, data_type, &filter, after, want).await?;
                after = page.last().map(|r| (r.updated_at, r.id));
                records.extend(page);
                if !more {
                    break;
                }
            }
            print_rows(
                json,
                "id\texternal_id\tintegration\taccount\tmatch\temail\tdomain\tupdated\tdeleted",
                &records,
                |r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.external_id,
                        r.integration_id,
                        r.account_id.map_or("-".to_string(), |a| a.to_string()),
                        r.match_method,
                        r.email.as_deref().unwrap_or("-"),
                        r.domain.as_deref().unwrap_or("-"),
                        r.updated_at.to_rfc3339(),
                        time(r.deleted_at)
                    )
                },
            )?;
        }
        crate::cli::RecordsCommand::Show {
            tenant,
            data_type,
            record,
        } => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let found = tenant_api::record(pool, tenant.id, data_type, record)
                .await?
                .with_context(|| {
                    format!(
                        "tenant `{}` has no {data_type} record {record}",
                        tenant.name
                    )
                })?;
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
    }
    Ok(())
}

/// Prints `rows` as one JSON object per line, or as a tab-separated table under `header` (what
/// every listing command does, so scripts can take either).
fn print_rows<T: serde::Serialize>(
    json: bool,
    header: &str,
    rows: &[T],
    line: impl Fn(&T) -> String,
) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for row in rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
    } else {
        writeln!(out, "{header}")?;
        for row in rows {
            writeln!(out, "{}", line(row))?;
        }
    }
    Ok(())
}

/// A time in a table cell: RFC 3339, `-` when there is none.
fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("-".to_string(), |t| t.to_rfc3339())
}

fn waiting_for(s: &crate::sync::SyncSummary) -> String {
    if s.final_received {
        return String::new();
    }
    let missing: Vec<crate::domain::DataType> = s
        .data_types
        .iter()
        .filter(|t| !s.final_data_types.contains(t))
        .copied()
        .collect();
    format!(
        " (no final batch of {})",
        crate::domain::DataType::list(&missing)
    )
}

async fn tokens_command(pool: &PgPool, command: TokensCommand) -> Result<()> {
    match command {
        TokensCommand::Create {
            tenant,
            name,
            read_only,
        } => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let created =
                admin::tokens::create(pool, tenant.id, name.as_deref(), read_only).await?;
            eprintln!(
                "created {} token {} for tenant `{}`; it is shown once and only its hash is stored. \
                 Callers send it as `Authorization: Bearer <token>`",
                if read_only {
                    "a read-only"
                } else {
                    "a read-write"
                },
                created.info.prefix,
                tenant.name
            );
            println!("{}", created.token.plaintext);
        }
        TokensCommand::List { tenant, json } => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let tokens = admin::tokens::list(pool, tenant.id).await?;
            print_rows(
                json,
                "id\tprefix\tname\taccess\tcreated\tlast_used\trevoked",
                &tokens,
                |t| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        t.id,
                        t.prefix,
                        t.name.as_deref().unwrap_or("-"),
                        if t.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        },
                        t.created_at.to_rfc3339(),
                        time(t.last_used_at),
                        time(t.revoked_at)
                    )
                },
            )?;
        }
        TokensCommand::Revoke { tenant, token } => {
            let tenant = admin::find_tenant(pool, &tenant).await?;
            let Some(revoked) = admin::tokens::revoke(pool, tenant.id, token).await? else {
                bail!("tenant `{}` has no token {token}", tenant.name);
            };
            eprintln!(
                "token {} of tenant `{}` is revoked; it stops working at once",
                revoked.prefix, tenant.name
            );
        }
    }
    Ok(())
}

async fn jobs_command(pool: &PgPool, engine: &jobs::Queue, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List {
            filter,
            limit,
            json,
        } => {
            let filter = filter.to_filter(&[])?;
            let listed = jobs::admin::list(pool, engine, &filter, limit, None).await?;
            print_rows(
                json,
                "id\tqueue\tkind\tstate\tattempt\ttag\tlast_error",
                &listed,
                |job| {
                    let last_error = job
                        .errors
                        .as_array()
                        .and_then(|e| e.last())
                        .and_then(|e| e["error"].as_str())
                        .unwrap_or("");
                    format!(
                        "{}\t{}\t{}\t{}\t{}/{}\t{}\t{}",
                        job.id,
                        job.queue,
                        job.kind,
                        job.state,
                        job.attempt,
                        job.max_attempts,
                        job.tag.as_deref().unwrap_or("-"),
                        last_error
                    )
                },
            )?;
        }
        JobsCommand::Retry {
            ids,
            all_dead,
            filter,
        } => {
            let mut filter = filter.to_filter(&ids)?;
            if all_dead {
                filter.states = vec![jobs::JobState::Failed];
            }
            bulk(pool, engine, jobs::BulkAction::Retry, &filter, "retried").await?;
        }
        JobsCommand::Cancel { ids, filter } => {
            let filter = filter.to_filter(&ids)?;
            bulk(pool, engine, jobs::BulkAction::Cancel, &filter, "cancelled").await?;
        }
        JobsCommand::Stats { json } => {
            let stats = jobs::admin::stats(pool, engine).await?;
            print_rows(
                json,
                "queue\tstate\tcount\toldest_available_secs\tpaused",
                &stats,
                |s| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        s.queue,
                        s.state,
                        s.count,
                        s.oldest_available_age_secs
                            .map_or("-".to_string(), |a| format!("{a:.1}")),
                        s.paused
                    )
                },
            )?;
        }
        JobsCommand::Pause { queue } => {
            jobs::admin::pause_queue(pool, engine, &queue).await?;
            eprintln!("queue `{queue}` paused: workers start none of its jobs until it is resumed");
        }
        JobsCommand::Resume { queue } => {
            jobs::admin::resume_queue(pool, engine, &queue).await?;
            eprintln!("queue `{queue}` resumed");
        }
    }
    Ok(())
}

/// A bulk admin action with a progress bar on stderr; prints the number of jobs changed.
async fn bulk(
    pool: &PgPool,
    queue: &jobs::Queue,
    action: jobs::BulkAction,
    filter: &jobs::JobFilter,
    verb: &str,
) -> Result<()> {
    if filter.is_empty() {
        bail!("name the jobs: give ids, --all-dead, or a filter (--state, --queue, --kind, --tag)");
    }
    let matching = jobs::admin::count(pool, queue, filter).await?;
    let bar = indicatif::ProgressBar::new(matching.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} jobs {wide_bar} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let changed = jobs::admin::apply(pool, queue, action, filter, 5_000, |done| {
        bar.set_position(done)
    })
    .await?;
    bar.finish_and_clear();
    eprintln!("{verb} {changed} of {matching} matching jobs");
    println!("{changed}");
    Ok(())
}

async fn mappings_command(pool: &PgPool, command: MappingsCommand) -> Result<()> {
    match command {
        MappingsCommand::Preview {
            integration,
            file,
            data_type,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let (records, from_file) = match &body {
                serde_json::Value::Array(records) => (records.clone(), None),
                serde_json::Value::Object(map) => (
                    map.get("records")
                        .and_then(|r| r.as_array())
                        .cloned()
                        .context("the file has no `records` array")?,
                    map.get("data_type")
                        .and_then(|d| d.as_str())
                        .map(str::to_string),
                ),
                _ => anyhow::bail!("the file must hold a webhook body or an array of records"),
            };
            let data_type = match (data_type, from_file) {
                (Some(d), _) => d,
                (None, Some(d)) => d
                    .parse()
                    .map_err(|e: crate::domain::kinds::UnknownValue| anyhow::anyhow!(e))?,
                (None, None) => {
                    anyhow::bail!("say which data type: --data-type contacts|tickets|deals")
                }
            };
            let permits = tokio::sync::Semaphore::new(1);
            let preview =
                admin::preview_mappings(pool, &permits, None, integration, data_type, records)
                    .await?;
            println!("{}", serde_json::to_string_pretty(&preview.results)?);
            if preview.omitted > 0 {
                eprintln!(
                    "{} more records not shown: the preview is limited to {} bytes of results",
                    preview.omitted,
                    admin::PREVIEW_MAX_BYTES
                );
            }
        }
        MappingsCommand::Set {
            integration,
            data_type,
            target,
            mapping,
        } => {
            let mapping: serde_json::Value =
                serde_json::from_str(&mapping).context("--mapping must be JSON")?;
            admin::set_mapping(pool, None, integration, data_type, &target, &mapping, true).await?;
            eprintln!("mapping for {data_type} `{target}` stored");
        }
        MappingsCommand::Disable {
            integration,
            data_type,
            target,
        } => {
            admin::set_mapping(
                pool,
                None,
                integration,
                data_type,
                &target,
                &serde_json::json!({}),
                false,
            )
            .await?;
            eprintln!("{data_type} `{target}` is no longer mapped for this integration");
        }
        MappingsCommand::Remove {
            integration,
            data_type,
            target,
        } => {
            if !admin::remove_mapping(pool, None, integration, data_type, &target).await? {
                anyhow::bail!(
                    "integration {integration} has no stored {data_type} mapping for `{target}`"
                );
            }
            eprintln!("stored mapping removed; the preset applies to `{target}` again");
        }
        MappingsCommand::List { integration, json } => {
            let mappings = admin::list_mappings(pool, None, integration).await?;
            print_rows(
                json,
                "data_type\ttarget\tmapping\tenabled",
                &mappings,
                |m| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        m.data_type, m.target, m.mapping, m.enabled
                    )
                },
            )?;
        }
    }
    Ok(())
}
