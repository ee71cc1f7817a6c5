//! `TriggerSync`: asks n8n to start an integration's workflow for one pending sync. A plain job
//! (its effect is an HTTP request): quick retries for connection failures happen in the client,
//! then the job's durable backoff; n8n's permanent refusals and exhausted attempts close the
//! sync as failed with the reason on its log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jobs::{JobError, JobMeta, PlainJob};

use super::JobContext;
use crate::{
    db::{self, sync_logs::TriggerTarget, tenant_tx},
    domain::{DataType, FailureReason, IntegrationStatus, SyncMode, SyncStatus},
    n8n::{Credentials, TriggerBody, TriggerError, credentials_context},
    sync::{TriggerSync, fail_sync, reopen_untriggered},
};

impl PlainJob<JobContext> for TriggerSync {
    async fn run(&self, ctx: &JobContext, meta: &JobMeta) -> Result<(), JobError> {
        let mut tx = tenant_tx(&ctx.pool, self.tenant_id).await?;
        let target = db::sync_logs::trigger_target(&mut tx, self.sync_log_id).await?;
        tx.commit().await?;
        let Some(mut target) = target else {
            tracing::info!(sync.id = %self.sync_log_id, "sync log no longer exists; nothing to trigger");
            return Ok(());
        };
        if target.sync_status == SyncStatus::Failed && target.triggered_at.is_none() {
            // Only this job fails a sync before its trigger, and only on its last attempt: running
            // again means an operator retried the dead job. The sync is given back its chance.
            let mut tx = tenant_tx(&ctx.pool, self.tenant_id).await?;
            let reopened = reopen_untriggered(&mut tx, self.sync_log_id).await?;
            tx.commit().await?;
            if reopened {
                tracing::info!(sync.id = %self.sync_log_id, "trigger retried by an operator; sync reopened");
                target.sync_status = SyncStatus::Pending;
            }
        }
        if target.sync_status != SyncStatus::Pending || target.triggered_at.is_some() {
            // Already triggered (a re-run after a crash) or closed meanwhile (watchdog, admin).
            tracing::info!(sync.id = %self.sync_log_id, sync.status = %target.sync_status, "sync is no longer waiting for its trigger");
            return Ok(());
        }
        if target.integration_status == IntegrationStatus::Paused {
            self.fail(
                FailureReason::TriggerFailed,
                "the integration was paused before n8n was asked to sync",
                ctx,
            )
            .await?;
            return Ok(());
        }
        let Some(url) = target.url.clone() else {
            return Err(self
                .give_up(
                    ctx,
                    FailureReason::TriggerRejected,
                    "the integration has no n8n webhook URL",
                )
                .await);
        };
        let credentials = match self.credentials(ctx, &target) {
            Ok(c) => c,
            Err(message) => {
                return Err(self
                    .give_up(ctx, FailureReason::TriggerFailed, &message)
                    .await);
            }
        };
        // The sync's start, taken before n8n is asked: whatever the workflow then fetches was
        // read after it, so this is where the next incremental sync may begin.
        let start = Utc::now();
        let body = self.body(ctx, &target).await?;

        let asked = std::time::Instant::now();
        let answer = ctx.n8n.trigger(&url, &credentials, &body).await;
        let outcome = match &answer {
            Ok(()) => "accepted",
            Err(TriggerError::Transient { .. }) => "transient",
            Err(e) if e.is_permanent() => "rejected",
            Err(_) => "failed",
        };
        crate::telemetry::metrics::trigger_attempt(outcome, asked.elapsed());
        match answer {
            Ok(()) => {
                let mut tx = tenant_tx(&ctx.pool, self.tenant_id).await?;
                db::sync_logs::set_triggered(&mut tx, self.sync_log_id, start).await?;
                tx.commit().await?;
                tracing::info!(sync.id = %self.sync_log_id, integration.id = %self.integration_id, "n8n accepted the sync trigger");
                Ok(())
            }
            Err(e) if e.is_permanent() => Err(self
                .give_up(ctx, FailureReason::TriggerRejected, &e.to_string())
                .await),
            Err(TriggerError::Transient {
                message,
                retry_after,
            }) => {
                if meta.attempt >= meta.max_attempts {
                    let summary = format!(
                        "n8n could not be asked to sync after {} attempts; last error: {message}",
                        meta.attempt
                    );
                    self.fail(FailureReason::TriggerFailed, &summary, ctx)
                        .await?;
                }
                Err(JobError::Retry {
                    message,
                    after: retry_after,
                })
            }
            Err(e) => Err(self
                .give_up(ctx, FailureReason::TriggerFailed, &e.to_string())
                .await),
        }
    }
}

impl TriggerSync {
    async fn fail(
        &self,
        reason: FailureReason,
        summary: &str,
        ctx: &JobContext,
    ) -> Result<(), JobError> {
        let mut tx = tenant_tx(&ctx.pool, self.tenant_id).await?;
        fail_sync(&mut tx, self.sync_log_id, reason, summary, Utc::now()).await?;
        tx.commit().await.map_err(JobError::from)?;
        tracing::warn!(sync.id = %self.sync_log_id, integration.id = %self.integration_id, %reason, summary, "sync failed before it started");
        Ok(())
    }

    /// Fails the sync and returns the permanent job error that kills the job.
    async fn give_up(&self, ctx: &JobContext, reason: FailureReason, summary: &str) -> JobError {
        if let Err(e) = self.fail(reason, summary, ctx).await {
            // The sync log could not be written: retry the whole job rather than lose the reason.
            return e;
        }
        JobError::permanent(summary)
    }

    fn credentials(&self, ctx: &JobContext, target: &TriggerTarget) -> Result<Credentials, String> {
        if target.auth_kind == "none" {
            return Ok(Credentials::None);
        }
        let (Some(sealed), Some(key_id)) =
            (&target.credentials_encrypted, &target.credentials_key_id)
        else {
            return Err("the integration's n8n credentials are missing".into());
        };
        let sealer = ctx.sealer.as_ref().ok_or(
            "the integration's n8n credentials are sealed but SYNCBRIDGE_ENCRYPTION_KEY is not set",
        )?;
        let plain = sealer
            .open(key_id, sealed, &credentials_context(self.integration_id))
            .map_err(|e| format!("cannot open the integration's n8n credentials: {e}"))?;
        serde_json::from_slice(&plain)
            .map_err(|_| "the integration's n8n credentials are not readable".to_string())
    }

    async fn body(
        &self,
        ctx: &JobContext,
        target: &TriggerTarget,
    ) -> Result<TriggerBody, JobError> {
        let (source_type, sync_mode) = (target.source_type, target.sync_mode);
        let data_types: Vec<DataType> = match &target.data_types {
            Some(types) if !types.is_empty() => types.clone(),
            _ => source_type.default_data_types().to_vec(),
        };
        let since_by_data_type: BTreeMap<DataType, Option<DateTime<Utc>>> = match sync_mode {
            SyncMode::Full => data_types.iter().map(|t| (*t, None)).collect(),
            SyncMode::Incremental => {
                let mut tx = tenant_tx(&ctx.pool, self.tenant_id).await?;
                let cursors =
                    db::cursors::of_types(&mut tx, self.integration_id, &data_types).await?;
                tx.commit().await?;
                let overlap =
                    chrono::Duration::from_std(ctx.cursor_overlap).unwrap_or(chrono::Duration::MAX);
                cursors
                    .into_iter()
                    .map(|(t, at)| (t, at.and_then(|at| at.checked_sub_signed(overlap))))
                    .collect()
            }
        };
        Ok(TriggerBody {
            integration_id: self.integration_id,
            sync_log_id: self.sync_log_id,
            source_type,
            data_type: (data_types.len() == 1).then(|| data_types[0]),
            data_types,
            sync_mode,
            since: earliest(&since_by_data_type),
            since_by_data_type,
            callback_url: ctx.callback_url.clone(),
        })
    }
}

/// The one `since` of a workflow that reads one value: the earliest, and null (everything) as
/// soon as one type is to be fetched in full.
fn earliest(since: &BTreeMap<DataType, Option<DateTime<Utc>>>) -> Option<DateTime<Utc>> {
    since
        .values()
        .try_fold(None, |min: Option<DateTime<Utc>>, at| {
            at.map(|at| Some(min.map_or(at, |m| m.min(at))))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_since_is_the_earliest_and_null_wins() {
        let at = |h: i64| DateTime::<Utc>::from_timestamp(h * 3600, 0).unwrap();
        let mut since = BTreeMap::from([
            (DataType::Contacts, Some(at(5))),
            (DataType::Deals, Some(at(2))),
        ]);
        assert_eq!(earliest(&since), Some(at(2)));
        since.insert(DataType::Tickets, None);
        assert_eq!(earliest(&since), None);
        assert_eq!(earliest(&BTreeMap::new()), None);
    }
}
