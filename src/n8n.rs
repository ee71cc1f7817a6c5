//! Talking to n8n: the trigger request that starts an integration's workflow, the credentials it
//! carries, the outbound URL policy (so syncbridge cannot be made a proxy to internal endpoints),
//! and how n8n's answers are classified into done, retry later, and give up.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use reqwest::{StatusCode, Url, header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{DataType, SourceType, SyncMode};

/// The resolver's refusal, recognised again in the error reqwest wraps it in.
const DENIED_BY_RESOLVER: &str = "resolves to a denied address";

/// How much of a refusing response body is kept on the sync log.
const BODY_EXCERPT_CHARS: usize = 500;

/// What syncbridge sends to start a sync; n8n's workflow reads these fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TriggerBody {
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    pub source_type: SourceType,
    pub data_types: Vec<DataType>,
    /// The one data type when exactly one is asked for (what a single-type workflow reads).
    pub data_type: Option<DataType>,
    pub sync_mode: SyncMode,
    /// Fetch records changed after this: the earliest of `since_by_data_type`, for workflows
    /// that read one value; null when any requested type is to be fetched in full.
    pub since: Option<DateTime<Utc>>,
    /// Per requested data type: fetch records changed after this (its cursor minus the
    /// overlap); null: everything (full syncs, and a type never synced completely).
    pub since_by_data_type: BTreeMap<DataType, Option<DateTime<Utc>>>,
    /// Where the workflow posts its batches.
    pub callback_url: String,
}

/// How syncbridge authenticates toward one integration's n8n webhook. Stored sealed; `Debug`
/// never shows the secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Credentials {
    None,
    /// n8n's Header Auth: one header name and value.
    Header {
        name: String,
        value: String,
    },
    /// n8n's Basic Auth.
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Header { name, .. } => write!(f, "Header({name}: [REDACTED])"),
            Self::Basic { username, .. } => write!(f, "Basic({username}:[REDACTED])"),
        }
    }
}

impl Credentials {
    /// The value stored in `integration_sources.n8n_auth_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Header { .. } => "header",
            Self::Basic { .. } => "basic",
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::None => Ok(()),
            Self::Header { name, value } => {
                header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
                header::HeaderValue::from_str(value).map_err(|_| {
                    "the header value has characters HTTP does not allow".to_string()
                })?;
                if value.is_empty() {
                    return Err("the header value is empty".into());
                }
                Ok(())
            }
            Self::Basic { username, password } => {
                if username.is_empty() || username.contains(':') {
                    return Err("a basic-auth user name must be non-empty and without `:`".into());
                }
                if password.is_empty() {
                    return Err("the basic-auth password is empty".into());
                }
                Ok(())
            }
        }
    }
}

/// The associated data of an integration's n8n credentials when sealed.
pub fn credentials_context(integration_id: Uuid) -> String {
    format!("integration:{integration_id}:n8n_credentials")
}

/// Where outbound requests may not go: networks (CIDR or single addresses) and host names.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a valid URL")]
    Invalid(String),
    #[error("the n8n webhook URL must be http or https, not `{0}`")]
    Scheme(String),
    #[error("the n8n webhook URL has no host")]
    NoHost,
    #[error(
        "the n8n webhook URL must not carry a user name or password; configure credentials instead"
    )]
    UserInfo,
    #[error("`{host}` is on the outbound deny list ({reason}); syncbridge does not call it")]
    Denied { host: String, reason: String },
}

impl UrlPolicy {
    /// Entries are CIDR networks (`169.254.0.0/16`), single addresses, or host names.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in entries {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.networks.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.networks.push(IpNet::from(ip));
            } else if !entry.is_empty() && !entry.contains('/') {
                policy
                    .hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(format!(
                    "n8n.deny: `{entry}` is not a network, address or host name"
                ));
            }
        }
        Ok(policy)
    }

    /// The configured deny list (`n8n.deny`).
    pub fn configured(config: &crate::config::N8nConfig) -> anyhow::Result<Self> {
        Self::new(&config.deny).map_err(anyhow::Error::msg)
    }

    pub fn denies_ip(&self, ip: IpAddr) -> Option<String> {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .find(|n| n.contains(&ip))
            .map(|n| format!("{ip} is in {n}"))
    }

    /// The reason the first denied address among `addrs` is denied.
    fn denies_any(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Option<String> {
        addrs.into_iter().find_map(|a| self.denies_ip(a.ip()))
    }

    /// Checks what can be checked without DNS: scheme, host, literal addresses, denied names.
    pub fn check(&self, url: &str) -> Result<Url, UrlError> {
        let parsed = Url::parse(url.trim()).map_err(|_| UrlError::Invalid(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(parsed.scheme().to_string()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        let denied = |reason: String| UrlError::Denied {
            host: parsed.host_str().unwrap_or_default().to_string(),
            reason,
        };
        match parsed.host() {
            None => return Err(UrlError::NoHost),
            Some(url::Host::Ipv4(ip)) => {
                if let Some(reason) = self.denies_ip(IpAddr::V4(ip)) {
                    return Err(denied(reason));
                }
            }
            Some(url::Host::Ipv6(ip)) => {
                if let Some(reason) = self.denies_ip(IpAddr::V6(ip)) {
                    return Err(denied(reason));
                }
            }
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if self.hosts.contains(&name) {
                    return Err(denied("a denied host name".into()));
                }
            }
        }
        Ok(parsed)
    }

    /// [`check`](Self::check), then resolves the host and refuses it if any address is denied.
    pub async fn check_resolved(&self, url: &str) -> Result<Url, UrlError> {
        let parsed = self.check(url)?;
        if let Some(url::Host::Domain(name)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(80);
            // A name that does not resolve here may resolve where n8n runs; only denied answers
            // are refused.
            if let Ok(addrs) = tokio::net::lookup_host((name, port)).await
                && let Some(reason) = self.denies_any(addrs)
            {
                return Err(UrlError::Denied {
                    host: name.to_string(),
                    reason: format!("it resolves to {reason}"),
                });
            }
        }
        Ok(parsed)
    }
}

/// Resolves like the system does, but fails when any address of the name is denied; installed
/// in the HTTP client so the check happens at connect time (no window for DNS rebinding).
struct GuardedResolver {
    policy: Arc<UrlPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(reason) = policy.denies_any(addrs.iter().copied()) {
                return Err(format!("`{host}` {DENIED_BY_RESOLVER}: {reason}").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Quick in-process retries of connection failures before the job's durable backoff.
    pub quick_retries: usize,
    pub policy: Arc<UrlPolicy>,
}

/// Why a trigger did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The URL is not allowed: nothing was sent. Permanent.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// n8n refused the request in a way retrying cannot fix (a 4xx other than 408/429, a 3xx).
    #[error("n8n answered {status}: {body}")]
    Rejected { status: u16, body: String },
    /// Worth trying again later, after `retry_after` when n8n said so.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl TriggerError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Transient { .. })
    }
}

/// The HTTP client of the trigger jobs.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    settings: ClientSettings,
}

impl Client {
    pub fn new(settings: ClientSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            // A redirect could lead to a denied address the resolver never sees (an IP literal);
            // n8n's webhooks do not redirect, so a 3xx is reported instead of followed.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: settings.policy.clone(),
            }))
            .user_agent(concat!("syncbridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, settings })
    }

    /// POSTs the trigger; returns once n8n accepted it (any 2xx).
    pub async fn trigger(
        &self,
        url: &str,
        credentials: &Credentials,
        body: &TriggerBody,
    ) -> Result<(), TriggerError> {
        let url = self.settings.policy.check(url)?;
        let send = || async {
            let mut request = self
                .http
                .post(url.clone())
                .header("Idempotency-Key", body.sync_log_id.to_string())
                .json(body);
            request = match credentials {
                Credentials::None => request,
                Credentials::Header { name, value } => {
                    let mut value = header::HeaderValue::from_str(value).map_err(|_| {
                        Attempt::Fatal("the stored header value is not valid".into())
                    })?;
                    value.set_sensitive(true);
                    request.header(name.as_str(), value)
                }
                Credentials::Basic { username, password } => {
                    request.basic_auth(username, Some(password))
                }
            };
            request.send().await.map_err(Attempt::Send)
        };
        let response = send
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(self.settings.quick_retries),
            )
            // Only a connection that never opened is retried at once; anything n8n may have
            // seen waits for the job's durable backoff.
            .when(|e| {
                matches!(e, Attempt::Send(e) if e.is_connect()
                    && !error_chain(e).contains(DENIED_BY_RESOLVER))
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(Attempt::Fatal(message)) => {
                return Err(TriggerError::Rejected {
                    status: 0,
                    body: message,
                });
            }
            Err(Attempt::Send(e)) => return Err(transport_error(&e, &self.settings)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
        let reason = status.canonical_reason().unwrap_or("");
        if status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            return Err(TriggerError::Transient {
                message: format!("n8n answered {} {reason}: {excerpt}", status.as_u16()),
                retry_after,
            });
        }
        Err(TriggerError::Rejected {
            status: status.as_u16(),
            body: if status.is_redirection() {
                format!(
                    "{reason}; syncbridge does not follow redirects, set the final webhook URL{}",
                    excerpt_suffix(&excerpt)
                )
            } else {
                format!("{reason}{}", excerpt_suffix(&excerpt))
            },
        })
    }
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.trim().is_empty() {
        String::new()
    } else {
        format!(" — {}", excerpt.trim())
    }
}

enum Attempt {
    Send(reqwest::Error),
    Fatal(String),
}

fn transport_error(e: &reqwest::Error, settings: &ClientSettings) -> TriggerError {
    // The resolver's refusal surfaces as a connect error: it is a policy decision, not a fault.
    let chain = error_chain(e);
    if chain.contains(DENIED_BY_RESOLVER) {
        return TriggerError::Url(UrlError::Denied {
            host: e.url().and_then(|u| u.host_str()).unwrap_or("").to_string(),
            reason: chain,
        });
    }
    let message = if e.is_timeout() {
        format!(
            "n8n did not answer within {} s (connect timeout {} s)",
            settings.timeout.as_secs(),
            settings.connect_timeout.as_secs()
        )
    } else if e.is_connect() {
        format!("cannot connect to n8n: {chain}")
    } else {
        format!("request to n8n failed: {chain}")
    };
    TriggerError::Transient {
        message,
        retry_after: None,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// `Retry-After` as seconds or an HTTP date; capped at a day so a bad header cannot park a job.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
        (at - Utc::now()).to_std().unwrap_or_default()
    };
    Some(delay.min(Duration::from_secs(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy::new(&[
            "169.254.0.0/16".into(),
            "fe80::/10".into(),
            "fd00:ec2::254".into(),
            "metadata.google.internal".into(),
        ])
        .unwrap()
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        let p = policy();
        assert!(p.check("https://n8n.example.com/webhook/sync").is_ok());
        assert!(p.check("http://127.0.0.1:5678/webhook/x").is_ok());
        assert!(
            matches!(p.check("ftp://n8n.example.com/"), Err(UrlError::Scheme(s)) if s == "ftp")
        );
        assert!(matches!(p.check("not a url"), Err(UrlError::Invalid(_))));
        assert_eq!(
            p.check("https://u:p@n8n.example.com/"),
            Err(UrlError::UserInfo)
        );
        for denied in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            assert!(
                matches!(p.check(denied), Err(UrlError::Denied { .. })),
                "{denied} was allowed"
            );
        }
        assert!(UrlPolicy::new(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn credentials_never_show_their_secret() {
        let c = Credentials::Header {
            name: "X-N8N-Key".into(),
            value: "s3cret-value".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        let b = Credentials::Basic {
            username: "sync".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(
            Credentials::Header {
                name: "bad header".into(),
                value: "x".into()
            }
            .validate()
            .is_err()
        );
    }
}
