//! Configuration: the typed settings of every process, loaded in layers and checked at start.
//!
//! Layers, later ones win: `config/default.toml` (compiled in), `config/<SYNCBRIDGE_ENV>.toml`,
//! then `SYNCBRIDGE__SECTION__KEY` environment variables plus `PORT` and `DATABASE_URL`.
//! Every struct denies unknown fields so a misspelt key stops the start with its name.
//! Secrets are `SecretString`s: their `Debug` prints `[REDACTED]`, and they may only come from
//! the environment, never from a file that could be committed.

use std::path::PathBuf;

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::SecretString;
use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any working directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Keys whose values are secrets: accepted from the environment only.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("database.url", "DATABASE_URL"),
    ("admin_token", "SYNCBRIDGE_ADMIN_TOKEN"),
    ("webhook_api_key", "N8N_WEBHOOK_API_KEY"),
    ("encryption_key", "SYNCBRIDGE_ENCRYPTION_KEY"),
    ("jwt.secret", "SYNCBRIDGE_JWT_SECRET"),
    ("metrics.token", "SYNCBRIDGE_METRICS_TOKEN"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    pub ingest: IngestConfig,
    pub scheduler: SchedulerConfig,
    pub n8n: N8nConfig,
    pub metrics: MetricsConfig,
    pub traces: TracesConfig,
    /// Platform JWTs accepted on the platform API (`/api/v1`); off unless a key source is set.
    pub jwt: crate::jwt::JwtSettings,
    /// The token of the admin API (`/api/admin`); `None` turns the admin API off.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// One webhook key for every integration (`N8N_WEBHOOK_API_KEY`); `None`: per-integration
    /// keys only.
    #[serde(default)]
    pub webhook_api_key: Option<SecretString>,
    /// Seals integration secrets at rest (`SYNCBRIDGE_ENCRYPTION_KEY`, 32 bytes in base64).
    #[serde(default)]
    pub encryption_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_unauthenticated_bodies: usize,
    pub max_records: usize,
    pub records_per_job: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub max_pending_records_per_tenant: i64,
    pub backpressure_retry_after_secs: u64,
    pub dedupe_window_secs: u64,
    pub keep_chunks_days: u32,
    pub keep_sync_errors_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub interval_ms: u64,
    pub missed_grace_secs: u64,
    pub watchdog_timeout_secs: u64,
    pub keep_ticks_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct N8nConfig {
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    pub quick_retries: usize,
    pub trigger_max_attempts: i32,
    pub public_base_url: String,
    pub cursor_overlap_secs: u64,
    pub deny: Vec<String>,
}

impl N8nConfig {
    /// Attempts of a trigger job; at least one.
    pub fn trigger_attempts(&self) -> i32 {
        self.trigger_max_attempts.max(1)
    }
}

impl Config {
    /// The sealer of integration secrets, or `None` when SYNCBRIDGE_ENCRYPTION_KEY is not set.
    pub fn sealer(&self) -> Result<Option<crate::crypto::Sealer>, crate::crypto::CryptoError> {
        self.encryption_key
            .as_ref()
            .map(|k| crate::crypto::Sealer::from_base64(secrecy::ExposeSecret::expose_secret(k)))
            .transpose()
    }

    /// The URL n8n posts batches to: `n8n.public_base_url`, or this process's own address.
    pub fn callback_url(&self) -> String {
        let base = if self.n8n.public_base_url.trim().is_empty() {
            let host = match self.http.host.as_str() {
                "0.0.0.0" | "::" | "" => "127.0.0.1",
                h => h,
            };
            format!("http://{host}:{}", self.http.port)
        } else {
            self.n8n.public_base_url.trim().to_string()
        };
        format!("{}/api/webhooks/n8n", base.trim_end_matches('/'))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `None` means: start the embedded PostgreSQL.
    #[serde(default)]
    pub url: Option<SecretString>,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_secs: u64,
    pub embedded: EmbeddedConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    /// Empty means: search `PATH`, then Debian's `/usr/lib/postgresql/<version>/bin`.
    pub bin_dir: PathBuf,
    pub run_as: String,
    pub database: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Optional OTLP trace export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// OTLP/HTTP traces URL (`http://collector:4318/v1/traces`); empty: no export.
    pub otlp_endpoint: String,
    pub service_name: String,
}

/// Where each role's `/metrics` is served, and how many series the integration label may make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Off: nothing is recorded (the metrics calls cost nothing) and no `/metrics` is served.
    pub enabled: bool,
    /// `/metrics` on the web port answers only this bearer token (`SYNCBRIDGE_METRICS_TOKEN`);
    /// `None`: not served there.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// A listener of its own per role, serving `/metrics` without a token; empty: none.
    pub web_listen: String,
    pub worker_listen: String,
    pub scheduler_listen: String,
    pub integration_labels: bool,
    pub integration_label_limit: usize,
    pub sample_interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            web_listen: String::new(),
            worker_listen: String::new(),
            scheduler_listen: String::new(),
            integration_labels: false,
            integration_label_limit: 100,
            sample_interval_secs: 15,
        }
    }
}

impl MetricsConfig {
    /// The addresses of the roles' own metrics listeners, once each (one process may run
    /// several roles on one address).
    pub fn listeners(&self, web: bool, worker: bool, scheduler: bool) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let mut addresses: Vec<String> = [
            (web, &self.web_listen),
            (worker, &self.worker_listen),
            (scheduler, &self.scheduler_listen),
        ]
        .into_iter()
        .filter(|(on, address)| *on && !address.trim().is_empty())
        .map(|(_, address)| address.trim().to_string())
        .collect();
        addresses.dedup();
        addresses
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub ingest_concurrency: usize,
    pub max_errors_per_sync: i64,
    pub fetch_batch: usize,
    pub poll_interval_ms: u64,
    pub heartbeat_interval_secs: u64,
    pub shutdown_deadline_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// The PostgreSQL channel the queue's workers LISTEN on.
    pub channel: String,
    /// The PostgreSQL schema the queue's tables live in.
    pub schema: String,
    /// The queue built from `channel` and `schema`, once: every part of the process (web, worker, scheduler,
    /// admin commands) enqueues through this one, so its NOTIFY debounce is the process's.
    #[serde(skip)]
    queue: std::sync::OnceLock<jobs::Queue>,
    pub maintenance_interval_ms: u64,
    pub stale_after_secs: u64,
    pub keep_completed_hours: u64,
    pub keep_failed_days: u64,
}

impl JobsConfig {
    /// The process's queue (its channel and schema are checked when the configuration loads).
    pub fn queue(&self) -> jobs::Queue {
        self.queue
            .get_or_init(|| jobs::Queue::new(&self.channel, &self.schema).unwrap_or_default())
            .clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration overlay {path} (chosen by SYNCBRIDGE_ENV={env}) does not exist")]
    MissingOverlay { env: String, path: PathBuf },
    #[error(
        "`{key}` is a secret and may only be set in the environment ({env_var}), not in {source_name}"
    )]
    SecretInFile {
        key: &'static str,
        env_var: &'static str,
        source_name: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the configuration from the real process environment and `./config`.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment()?)
    }

    /// The layered sources, before extraction; public so tests and tools can add layers.
    pub fn figment() -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Ok(env) = std::env::var("SYNCBRIDGE_ENV") {
            let dir = std::env::var_os("SYNCBRIDGE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config"));
            let path = dir.join(format!("{env}.toml"));
            if !path.is_file() {
                return Err(ConfigError::MissingOverlay { env, path });
            }
            figment = figment.merge(Toml::file(path));
        }
        Ok(figment
            .merge(Env::prefixed("SYNCBRIDGE__").split("__"))
            .merge(
                Env::raw()
                    .only(&[
                        "PORT",
                        "DATABASE_URL",
                        "SYNCBRIDGE_ADMIN_TOKEN",
                        "N8N_WEBHOOK_API_KEY",
                        "SYNCBRIDGE_ENCRYPTION_KEY",
                        "SYNCBRIDGE_JWT_SECRET",
                        "SYNCBRIDGE_METRICS_TOKEN",
                    ])
                    .map(|key| match key.as_str() {
                        "PORT" => "http.port".into(),
                        "DATABASE_URL" => "database.url".into(),
                        "N8N_WEBHOOK_API_KEY" => "webhook_api_key".into(),
                        "SYNCBRIDGE_ENCRYPTION_KEY" => "encryption_key".into(),
                        "SYNCBRIDGE_JWT_SECRET" => "jwt.secret".into(),
                        "SYNCBRIDGE_METRICS_TOKEN" => "metrics.token".into(),
                        _ => "admin_token".into(),
                    }),
            ))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        for (key, env_var) in SECRET_KEYS {
            if let Some(meta) = figment.find_metadata(key)
                && meta.source.is_some()
            {
                // Env providers carry no source; files and compiled-in strings do.
                let source_name = meta
                    .source
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(ConfigError::SecretInFile {
                    key,
                    env_var,
                    source_name,
                });
            }
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database.max_connections must be at least 1".into(),
            ));
        }
        if self.database.min_connections > self.database.max_connections {
            return Err(ConfigError::Invalid(
                "database.min_connections must not exceed database.max_connections".into(),
            ));
        }
        if self.worker.concurrency == 0
            || self.worker.fetch_batch == 0
            || self.worker.ingest_concurrency == 0
        {
            return Err(ConfigError::Invalid(
                "worker.concurrency and worker.fetch_batch must be at least 1".into(),
            ));
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).len() < 16)
        {
            return Err(ConfigError::Invalid(
                "SYNCBRIDGE_ADMIN_TOKEN must be at least 16 characters long".into(),
            ));
        }
        if self
            .webhook_api_key
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).len() < 16)
        {
            return Err(ConfigError::Invalid(
                "N8N_WEBHOOK_API_KEY must be at least 16 characters long".into(),
            ));
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).len() < 16)
        {
            return Err(ConfigError::Invalid(
                "SYNCBRIDGE_METRICS_TOKEN must be at least 16 characters long".into(),
            ));
        }
        for (key, address) in [
            ("metrics.web_listen", &self.metrics.web_listen),
            ("metrics.worker_listen", &self.metrics.worker_listen),
            ("metrics.scheduler_listen", &self.metrics.scheduler_listen),
        ] {
            if !address.trim().is_empty() && address.trim().parse::<std::net::SocketAddr>().is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an address like 127.0.0.1:9464, not `{address}`"
                )));
            }
        }
        jobs::Queue::new(&self.jobs.channel, &self.jobs.schema)
            .map_err(|e| ConfigError::Invalid(format!("jobs.channel or jobs.schema: {e}")))?;
        if let Some(key) = &self.encryption_key {
            crate::crypto::Sealer::from_base64(secrecy::ExposeSecret::expose_secret(key))
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if let Some(problem) = self.jwt.problem() {
            return Err(ConfigError::Invalid(problem));
        }
        let ingest = &self.ingest;
        if ingest.max_body_bytes == 0
            || ingest.max_records == 0
            || ingest.records_per_job == 0
            || ingest.rate_limit_per_second == 0
            || ingest.rate_limit_burst == 0
        {
            return Err(ConfigError::Invalid(
                "ingest.max_body_bytes, max_records, records_per_job, rate_limit_per_second and \
                 rate_limit_burst must be at least 1"
                    .into(),
            ));
        }
        if ingest.max_records >= 1 << 20 {
            // A record's place in delivery order keeps its index in 20 bits.
            return Err(ConfigError::Invalid(
                "ingest.max_records must be below 1048576".into(),
            ));
        }
        if self.database.embedded.database.is_empty() {
            return Err(ConfigError::Invalid(
                "database.embedded.database must not be empty".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter).map_err(|e| {
            ConfigError::Invalid(format!(
                "log.filter {:?} is not a filter: {e}",
                self.log.filter
            ))
        })?;
        Ok(())
    }
}

/// Figment's errors already name the key and the file; join all of them into one readable line.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let mut line = if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("key `{key}`: {}", e.kind)
            };
            if let Some(source) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                line.push_str(&format!(" (in {source})"));
            } else if let Some(meta) = &e.metadata {
                line.push_str(&format!(" (from {})", meta.name));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's Jail closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_load_with_no_configuration() {
        Jail::expect_with(|_| {
            let config = Config::load().expect("defaults load");
            assert_eq!(config.http.port, 8080);
            assert!(config.database.url.is_none());
            assert_eq!(
                config.database.embedded.data_dir,
                PathBuf::from(".syncbridge/postgres")
            );
            assert_eq!(config.log.format, LogFormat::Text);
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_sections_and_conventional_variables() {
        Jail::expect_with(|jail| {
            jail.set_env("SYNCBRIDGE__HTTP__HOST", "0.0.0.0");
            jail.set_env("SYNCBRIDGE__DATABASE__MAX_CONNECTIONS", "3");
            jail.set_env("SYNCBRIDGE__LOG__FORMAT", "json");
            jail.set_env("PORT", "9123");
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@db/x");
            let config = Config::load().expect("loads");
            assert_eq!(config.http.host, "0.0.0.0");
            assert_eq!(config.http.port, 9123);
            assert_eq!(config.database.max_connections, 3);
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(
                config.database.url.as_ref().unwrap().expose_secret(),
                "postgres://u:hunter2@db/x"
            );
            Ok(())
        });
    }

    #[test]
    fn overlay_chosen_by_syncbridge_env_is_applied() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file("config/staging.toml", "[http]\nport = 7000\n")?;
            jail.set_env("SYNCBRIDGE_ENV", "staging");
            assert_eq!(Config::load().expect("loads").http.port, 7000);
            Ok(())
        });
    }

    #[test]
    fn missing_overlay_is_an_error_naming_the_file() {
        Jail::expect_with(|jail| {
            jail.set_env("SYNCBRIDGE_ENV", "prod");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("prod.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_environment_stops_the_start_naming_it() {
        Jail::expect_with(|jail| {
            jail.set_env("SYNCBRIDGE__HTTP__PROT", "80");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_overlay_stops_the_start_naming_key_and_file() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file("config/dev.toml", "[worker]\nconcurency = 4\n")?;
            jail.set_env("SYNCBRIDGE_ENV", "dev");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("concurency"), "{err}");
            assert!(err.contains("dev.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn value_of_the_wrong_type_names_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SYNCBRIDGE__HTTP__PORT", "eighty");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("http.port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secret_in_a_file_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/dev.toml",
                "[database]\nurl = \"postgres://u:pw@h/d\"\n",
            )?;
            jail.set_env("SYNCBRIDGE_ENV", "dev");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
            assert!(err.contains("DATABASE_URL"), "{err}");
            assert!(!err.contains("pw@"), "secret leaked into the error: {err}");
            Ok(())
        });
    }

    #[test]
    fn debug_output_never_shows_the_database_password() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@db/x");
            let config = Config::load().expect("loads");
            let printed = format!("{config:?}");
            assert!(!printed.contains("hunter2"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn bad_log_filter_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("SYNCBRIDGE__LOG__FILTER", "info,[[[");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("log.filter"), "{err}");
            Ok(())
        });
    }
}
