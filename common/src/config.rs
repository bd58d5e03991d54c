//! Typed settings, read once from the environment (and `.env`) and validated at start-up.

use std::{env, fmt, time::Duration};

use thiserror::Error;

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
    pub url: Secret,
    /// Topic exchange every event is published to.
    pub exchange: String,
    /// Durable quorum queue the workers consume.
    pub queue: String,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Allowed browser origins; `*` allows any.
    pub cors_origins: Vec<String>,
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub secret_key: Secret,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    /// Failed logins for one account name before further attempts get 429.
    pub login_max_failures: u32,
    /// How long failed logins are remembered, and so how long a lockout lasts.
    pub login_lockout: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Folder for the daily-rotated log file; `None` logs to the console only.
    pub dir: Option<String>,
    /// `tracing` filter directive, e.g. `info,sqlx=warn`.
    pub filter: String,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// How often the watchdog looks for stuck orders and expired idempotency keys.
    pub watchdog_interval: Duration,
    /// An order whose accepted commands are not all applied after this long is re-enqueued.
    pub stuck_after: Duration,
    /// Idempotency keys are kept at least this long.
    pub idempotency_ttl: Duration,
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
                max_connections: parse(&lookup, "DATABASE_MAX_CONNECTIONS", 10, "a whole number")?,
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
                url: Secret::new(get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")),
                exchange: get("AMQP_EXCHANGE", "orderflow"),
                queue: get("AMQP_QUEUE", "orderflow.orders"),
            },
            http: HttpSettings {
                host: get("HOST", "0.0.0.0"),
                port: parse(&lookup, "PORT", 8000, "a port number")?,
                cors_origins: get("CORS_ORIGINS", "http://localhost:3000")
                    .split(',')
                    .map(str::trim)
                    .filter(|origin| !origin.is_empty())
                    .map(str::to_owned)
                    .collect(),
                body_limit_bytes: parse(&lookup, "BODY_LIMIT_BYTES", 256 * 1024, "bytes")?,
            },
            auth: AuthSettings {
                secret_key: Secret::new(secret_key),
                access_token_ttl: Duration::from_secs(
                    60 * parse::<u64>(&lookup, "ACCESS_TOKEN_EXPIRE_MINUTES", 30, "minutes")?,
                ),
                refresh_token_ttl: Duration::from_secs(
                    86_400 * parse::<u64>(&lookup, "REFRESH_TOKEN_EXPIRE_DAYS", 7, "days")?,
                ),
                issuer: get("JWT_ISSUER", "orderflow"),
                audience: get("JWT_AUDIENCE", "orderflow-api"),
                login_max_failures: parse(&lookup, "LOGIN_MAX_FAILURES", 5, "a whole number")?,
                login_lockout: Duration::from_secs(parse(
                    &lookup,
                    "LOGIN_LOCKOUT_SECS",
                    900,
                    "seconds",
                )?),
            },
            log: LogSettings {
                format: log_format,
                dir: (!log_dir.is_empty()).then_some(log_dir),
                filter: get("RUST_LOG", "info,sqlx=warn,lapin=warn"),
            },
            worker: WorkerSettings {
                prefetch: parse(
                    &lookup,
                    "WORKER_PREFETCH",
                    16,
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
            },
        })
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        expected,
    }
}

fn parse<T: std::str::FromStr>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_work_for_local_development() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.http.port, 8000);
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.auth.access_token_ttl, Duration::from_secs(30 * 60));
    }

    #[test]
    fn production_refuses_the_default_secret() {
        let err = settings(&[("ENVIRONMENT", "production")]).unwrap_err();
        assert!(matches!(err, ConfigError::WeakSecret));
    }

    #[test]
    fn production_refuses_a_short_secret() {
        let err = settings(&[("ENVIRONMENT", "production"), ("SECRET_KEY", "short")]).unwrap_err();
        assert!(matches!(err, ConfigError::WeakSecret));
    }

    #[test]
    fn production_accepts_a_long_secret_and_logs_json() {
        let key = "k".repeat(40);
        let s = settings(&[("ENVIRONMENT", "production"), ("SECRET_KEY", &key)]).expect("valid");
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let err = settings(&[("PORT", "eighty")]).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn cors_origins_are_split_and_trimmed() {
        let s = settings(&[("CORS_ORIGINS", "http://a.test, http://b.test,")]).expect("valid");
        assert_eq!(s.http.cors_origins, vec!["http://a.test", "http://b.test"]);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = settings(&[("SECRET_KEY", "super-secret-value")]).expect("valid");
        assert!(!format!("{s:?}").contains("super-secret-value"));
    }
}
