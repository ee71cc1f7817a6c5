//! The closed vocabularies of the product: source systems, data types, statuses and sync modes.
//!
//! Their string forms are stored in the database (and checked there by constraints), so a
//! variant's name never changes once released.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Defines a string-backed enum with `as_str`, `Display`, `FromStr` (naming the valid values on
/// error), serde and its OpenAPI schema (the values), so each vocabulary is declared once.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: s.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

/// A string that is not one of a vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; expected one of: {}", expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

vocabulary!(
    /// The external system an integration pulls from.
    SourceType, "source type" {
        ZohoCrm => "zoho_crm",
        ZohoDesk => "zoho_desk",
        Jira => "jira",
        Salesforce => "salesforce",
        Hubspot => "hubspot",
        Zendesk => "zendesk",
        Intercom => "intercom",
        Slack => "slack",
        Custom => "custom",
    }
);

impl SourceType {
    /// What a sync of this source asks n8n for when the integration names no data types: the
    /// types its presets map.
    pub fn default_data_types(self) -> &'static [DataType] {
        use DataType::*;
        match self {
            Self::ZohoCrm | Self::Hubspot => &[Contacts, Deals],
            Self::ZohoDesk | Self::Jira | Self::Zendesk => &[Tickets],
            Self::Salesforce => &[Deals],
            Self::Intercom | Self::Slack => &[Contacts],
            Self::Custom => &[Contacts, Tickets, Deals],
        }
    }

    /// Whether the source has records of `data_type` at all: the types its presets map (a
    /// custom source may send any). A batch of another type is refused at the webhook.
    pub fn provides(self, data_type: DataType) -> bool {
        self.default_data_types().contains(&data_type)
    }
}

vocabulary!(
    /// The kind of record a batch carries, and so the table it lands in.
    DataType, "data type" {
        Contacts => "contacts",
        Tickets => "tickets",
        Deals => "deals",
    }
);

vocabulary!(
    /// How a record was matched to an account (`none`: it was not; the row says why).
    MatchMethod, "match method" {
        ExactDomain => "exact_domain",
        RegistrableDomain => "registrable_domain",
        Name => "name",
        None => "none",
    }
);

impl DataType {
    /// `contacts, deals`: data types as messages name them.
    pub fn list(types: &[DataType]) -> String {
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

vocabulary!(
    /// Whether an integration accepts deliveries and is scheduled.
    IntegrationStatus, "integration status" {
        Active => "active",
        Paused => "paused",
        Error => "error",
    }
);

vocabulary!(
    /// `full` syncs may soft-delete records they did not see; `incremental` ones never do.
    SyncMode, "sync mode" {
        Incremental => "incremental",
        Full => "full",
    }
);

/// Ticks that passed while no scheduler ran: forgotten, or run once for the latest. One policy
/// for integration schedules and the queue's periodic jobs alike, so it is the queue's type.
pub use jobs::MissedTicks;

vocabulary!(
    /// A tick that comes while a sync of the integration is still open.
    OnRunning, "on-running policy" {
        Skip => "skip",
        Queue => "queue",
    }
);

vocabulary!(
    /// Why a sync was started; `replay`: an operator re-ran a sync's stored chunks.
    SyncTrigger, "sync trigger" {
        Webhook => "webhook",
        Schedule => "schedule",
        Manual => "manual",
        Retry => "retry",
        Replay => "replay",
    }
);

vocabulary!(
    /// Where a sync log is: open (`pending`, `running`) or closed.
    SyncStatus, "sync status" {
        Pending => "pending",
        Running => "running",
        Success => "success",
        Partial => "partial",
        Failed => "failed",
    }
);

impl SyncStatus {
    pub const OPEN: &'static [SyncStatus] = &[SyncStatus::Pending, SyncStatus::Running];

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}

vocabulary!(
    /// Where a delivered batch is: `failed` when a chunk of it could not be processed (its
    /// records are counted failed) or it was discarded.
    BatchState, "batch state" {
        Received => "received",
        Processing => "processing",
        Processed => "processed",
        Failed => "failed",
    }
);

vocabulary!(
    /// Why a sync failed as a whole, or closed other than by its final batch. `processing_failed`:
    /// a chunk's job died or a batch was discarded, and its records are counted failed.
    /// `source_error`: the workflow reported that fetching from the source failed.
    FailureReason, "failure reason" {
        TriggerRejected => "trigger_rejected",
        TriggerFailed => "trigger_failed",
        TimedOut => "timed_out",
        ProcessingFailed => "processing_failed",
        ClosedByAdmin => "closed_by_admin",
        SourceError => "source_error",
    }
);

vocabulary!(
    /// What became of a full sync's sweep of one data type: `skipped` when the sync saw too few
    /// of the live rows for its absence to mean deletion.
    SweepState, "sweep state" {
        Applied => "applied",
        Skipped => "skipped",
    }
);

vocabulary!(
    /// What a schedule tick did.
    TickOutcome, "tick outcome" {
        Triggered => "triggered",
        SkippedRunning => "skipped_running",
        SkippedMissed => "skipped_missed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_text() {
        for s in SourceType::ALL {
            assert_eq!(s.as_str().parse::<SourceType>().unwrap(), *s);
        }
        for d in DataType::ALL {
            assert_eq!(d.to_string().parse::<DataType>().unwrap(), *d);
        }
        assert_eq!(SourceType::ALL.len(), 9);
    }

    #[test]
    fn unknown_value_lists_the_valid_ones() {
        let err = "hubspott".parse::<SourceType>().unwrap_err().to_string();
        assert!(err.contains("hubspott"), "{err}");
        assert!(err.contains("zoho_crm"), "{err}");
        assert!(err.contains("custom"), "{err}");
    }

    #[test]
    fn serde_uses_the_stored_names() {
        assert_eq!(
            serde_json::to_string(&SourceType::ZohoDesk).unwrap(),
            "\"zoho_desk\""
        );
        let parsed: SyncMode = serde_json::from_str("\"full\"").unwrap();
        assert_eq!(parsed, SyncMode::Full);
    }
}
