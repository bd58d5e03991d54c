//! Authentication settings: the signing key, token lifetimes, sign-in budgets and the
//! bounds on password hashing.

use std::time::Duration;

use super::{ConfigError, Secret, parse};

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub secret_key: Secret,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    /// Sign-in attempts for one account within `login_lockout` before further ones get 429.
    pub login_max_failures: u32,
    /// How long failed logins are remembered, and so how long a lockout lasts.
    pub login_lockout: Duration,
    /// Login attempts one client address may make per minute.
    pub login_per_ip_per_minute: u32,
    /// Accounts one client address may register per hour.
    pub register_per_ip_per_hour: u32,
    /// Password hashes or verifications (19 MiB each) that may run at once.
    pub password_hash_concurrency: usize,
    /// Further hashing requests that may wait for a slot; beyond them the answer is 503.
    pub password_hash_queue: usize,
    /// A refresh token presented again this soon after its rotation gets the same new pair
    /// (two tabs refreshing at once) instead of revoking the session family.
    pub refresh_reuse_grace: Duration,
}

impl AuthSettings {
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        secret_key: String,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        Ok(Self {
            secret_key: Secret::new(secret_key),
            access_token_ttl: Duration::from_secs(
                60 * parse::<u64>(lookup, "ACCESS_TOKEN_EXPIRE_MINUTES", 30, "minutes")?,
            ),
            refresh_token_ttl: Duration::from_secs(
                86_400 * parse::<u64>(lookup, "REFRESH_TOKEN_EXPIRE_DAYS", 7, "days")?,
            ),
            issuer: get("JWT_ISSUER", "orderflow"),
            audience: get("JWT_AUDIENCE", "orderflow-api"),
            login_max_failures: parse(lookup, "LOGIN_MAX_FAILURES", 5, "a whole number")?,
            login_lockout: Duration::from_secs(parse(
                lookup,
                "LOGIN_LOCKOUT_SECS",
                900,
                "seconds",
            )?),
            login_per_ip_per_minute: parse(
                lookup,
                "LOGIN_PER_IP_PER_MINUTE",
                30,
                "a whole number",
            )?,
            register_per_ip_per_hour: parse(
                lookup,
                "REGISTER_PER_IP_PER_HOUR",
                20,
                "a whole number",
            )?,
            password_hash_concurrency: parse(
                lookup,
                "PASSWORD_HASH_CONCURRENCY",
                cores(),
                "a whole number",
            )?
            .max(1),
            password_hash_queue: parse(
                lookup,
                "PASSWORD_HASH_QUEUE",
                4 * cores(),
                "a whole number",
            )?,
            refresh_reuse_grace: Duration::from_secs(parse(
                lookup,
                "REFRESH_REUSE_GRACE_SECS",
                5,
                "seconds",
            )?),
        })
    }
}

/// Cores available to this process: the default for CPU-bound concurrency limits.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}
