//! Typed settings, read once from the environment (and `.env`) and validated at start-up.

mod auth;
mod email;
mod http;
mod payments;
mod retention;
#[cfg(test)]
mod tests;
mod webhooks;

use std::{env, fmt, time::Duration};

pub use auth::AuthSettings;
pub use email::EmailSettings;
pub use http::HttpSettings;
pub use payments::{PaymentSettings, StripeSettings};
pub use retention::RetentionSettings;
use thiserror::Error;
pub use webhooks::WebhookSettings;

/// The secret that ships in `.env.example`; refused in production.
pub const DEFAULT_SECRET_KEY: &str = "change-me-in-production-this-is-a-development-key";
const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Where the process runs; production turns on strict checks and JSON logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// How console log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A value that must never be printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every setting of the system, grouped by concern.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub worker: WorkerSettings,
    pub metrics: MetricsSettings,
    pub email: EmailSettings,
    pub webhooks: WebhookSettings,
    pub payments: PaymentSettings,
}

/// Where Prometheus scrapes each process.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// The api's own scrape listener; `None` serves `/metrics` on the api's port.
    pub api_addr: Option<String>,
    /// The worker's scrape listener; `None` turns it off.
    pub worker_addr: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Connection URL; may hold a password, so it is kept as a secret.
    pub url: Secret,
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
    /// Longest any one statement may run (a lock wait included) before it is cancelled.
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The nodes of the broker (one, or each node of a cluster); they may hold passwords.
    pub urls: Vec<Secret>,
    /// Heartbeat interval proposed on every connection whose URL sets none (0 takes the
    /// broker's, 60 s by default). A node that froze or was cut off is noticed after two
    /// silent intervals.
    pub heartbeat_secs: u16,
    /// Topic exchange every event is published to.
    pub exchange: String,
    /// Durable quorum queue the workers consume.
    pub queue: String,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Folder for the daily-rotated log file; `None` logs to the console only.
    pub dir: Option<String>,
    /// `tracing` filter directive, e.g. `info,sqlx=warn`.
    pub filter: String,
    /// Daily log files kept per binary; older ones are deleted at rotation.
    pub max_files: usize,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub prefetch: u16,
    /// Most deliveries applied in one transaction; 1 applies each on its own.
    pub batch_size: std::num::NonZeroU16,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// How often the watchdog looks for stuck orders and expired idempotency keys.
    pub watchdog_interval: Duration,
    /// An order whose accepted commands are not all applied after this long is re-enqueued.
    pub stuck_after: Duration,
    /// Idempotency keys are kept at least this long.
    pub idempotency_ttl: Duration,
    pub retention: RetentionSettings,
}

impl WorkerSettings {
    /// Batches a worker applies at once: prefetch bounds the unacknowledged messages, and
    /// a full set of batches fits within it.
    pub fn batches_in_flight(&self) -> usize {
        usize::from(self.prefetch).div_ceil(usize::from(self.batch_size.get()))
    }
}

/// A setting that is missing its right form; the message names the variable and the fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{name} has an invalid value {value:?}: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "SECRET_KEY is the default or shorter than {MIN_PRODUCTION_SECRET_BYTES} bytes, which production refuses: \
         set SECRET_KEY to a random value, e.g. `openssl rand -hex 32`"
    )]
    WeakSecret,
    #[error("{name} is not set: {why}")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error(
        "SECRET_KEY is not set, and the built-in development key is only allowed with \
         ENVIRONMENT=development and HOST on loopback (127.0.0.1 or ::1), not HOST={host:?}: \
         anyone could sign tokens for this server. Set SECRET_KEY, e.g. `export SECRET_KEY=$(openssl rand -hex 32)`"
    )]
    DevelopmentKeyExposed { host: String },
}

impl Settings {
    /// Reads `.env` (when present) and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        // A missing .env is normal: the environment alone may configure everything.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Builds settings from any key/value source, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        let environment = match get("ENVIRONMENT", "development").to_lowercase().as_str() {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => return Err(invalid("ENVIRONMENT", other, "development or production")),
        };
        let log_format = match lookup("LOG_FORMAT").map(|v| v.to_lowercase()).as_deref() {
            None if environment == Environment::Production => LogFormat::Json,
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("LOG_FORMAT", other, "pretty or json")),
        };
        let secret_key = get("SECRET_KEY", DEFAULT_SECRET_KEY);
        if environment == Environment::Production
            && (secret_key == DEFAULT_SECRET_KEY || secret_key.len() < MIN_PRODUCTION_SECRET_BYTES)
        {
            return Err(ConfigError::WeakSecret);
        }
        let log_dir = get("LOG_DIR", "logs");
        Ok(Self {
            environment,
            database: DatabaseSettings {
                url: Secret::new(get(
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/orderflow",
                )),
                max_connections: parse(&lookup, "DATABASE_MAX_CONNECTIONS", 20, "a whole number")?,
                acquire_timeout: Duration::from_millis(parse(
                    &lookup,
                    "DATABASE_ACQUIRE_TIMEOUT_MS",
                    3000,
                    "milliseconds",
                )?),
                statement_timeout: Duration::from_millis(parse(
                    &lookup,
                    "DATABASE_STATEMENT_TIMEOUT_MS",
                    10_000,
                    "milliseconds",
                )?),
            },
            broker: BrokerSettings {
                urls: broker_urls(&get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))?,
                heartbeat_secs: parse(&lookup, "AMQP_HEARTBEAT_SECS", 10, "seconds")?,
                exchange: get("AMQP_EXCHANGE", "orderflow"),
                queue: get("AMQP_QUEUE", "orderflow.orders"),
            },
            http: HttpSettings::from_lookup(&lookup)?,
            auth: AuthSettings::from_lookup(&lookup, secret_key)?,
            log: LogSettings {
                format: log_format,
                dir: (!log_dir.is_empty()).then_some(log_dir),
                filter: get("RUST_LOG", "info,sqlx=warn,lapin=warn"),
                max_files: parse(&lookup, "LOG_MAX_FILES", 14, "a whole number")?,
            },
            worker: WorkerSettings {
                prefetch: parse(
                    &lookup,
                    "WORKER_PREFETCH",
                    64,
                    "a whole number from 1 to 65535",
                )?,
                batch_size: parse(
                    &lookup,
                    "WORKER_BATCH_SIZE",
                    std::num::NonZeroU16::new(32).expect("not zero"),
                    "a whole number from 1 to 65535",
                )?,
                max_attempts: parse(&lookup, "WORKER_MAX_ATTEMPTS", 5, "a whole number")?,
                watchdog_interval: Duration::from_secs(parse(
                    &lookup,
                    "WATCHDOG_INTERVAL_SECS",
                    30,
                    "seconds",
                )?),
                stuck_after: Duration::from_secs(parse(
                    &lookup,
                    "STUCK_AFTER_SECS",
                    60,
                    "seconds",
                )?),
                idempotency_ttl: Duration::from_secs(
                    3600 * parse::<u64>(&lookup, "IDEMPOTENCY_KEY_TTL_HOURS", 24, "hours")?,
                ),
                retention: RetentionSettings::from_lookup(&lookup)?,
            },
            metrics: MetricsSettings {
                api_addr: Some(get("API_METRICS_ADDR", "")).filter(|a| !a.is_empty()),
                worker_addr: Some(get("METRICS_ADDR", "127.0.0.1:9091")).filter(|a| !a.is_empty()),
            },
            email: EmailSettings::from_lookup(&lookup)?,
            webhooks: WebhookSettings::from_lookup(&lookup)?,
            payments: PaymentSettings::from_lookup(&lookup)?,
        })
    }
}

impl Settings {
    /// Refuses the built-in signing key unless this is a development server reachable only
    /// from this machine. Called by the api before it listens.
    pub fn check_signing_key(&self) -> Result<(), ConfigError> {
        let default_key = self.auth.secret_key.expose() == DEFAULT_SECRET_KEY;
        if default_key
            && (self.environment != Environment::Development || !self.http.listens_on_loopback())
        {
            return Err(ConfigError::DevelopmentKeyExposed {
                host: self.http.host.clone(),
            });
        }
        Ok(())
    }
}

/// `AMQP_URL`: one node's URL, or a comma-separated list of a cluster's nodes.
fn broker_urls(raw: &str) -> Result<Vec<Secret>, ConfigError> {
    let urls: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(invalid(
            "AMQP_URL",
            "",
            "one or more amqp:// or amqps:// URLs",
        ));
    }
    if let Some(bad) = urls.iter().find(|url| {
        !(url.starts_with("amqp://") || url.starts_with("amqps://"))
            || url.parse::<lapin::uri::AMQPUri>().is_err()
    }) {
        // Never echo the value: it may hold a password.
        let shown = bad.rsplit_once('@').map_or(*bad, |(_, host)| host);
        return Err(invalid(
            "AMQP_URL",
            shown,
            "amqp:// or amqps:// URLs, comma-separated for a cluster's nodes",
        ));
    }
    Ok(urls
        .into_iter()
        .map(|url| Secret::new(url.to_owned()))
        .collect())
}

pub(crate) fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        expected,
    }
}

pub(crate) fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| invalid(name, &raw, expected)),
    }
}
