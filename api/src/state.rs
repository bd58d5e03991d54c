//! Shared application state handed to every handler.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use common::config::Settings;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::{jwt::JwtKeys, throttle::LoginThrottle};

/// Whether the outbox relay currently holds a working broker channel.
#[derive(Debug, Clone, Default)]
pub struct BrokerStatus(Arc<AtomicBool>);

impl BrokerStatus {
    pub fn set_connected(&self, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub jwt: Arc<JwtKeys>,
    /// A real hash to verify against when a login names no user, so that answer takes as
    /// long as a wrong password and does not reveal which accounts exist.
    pub dummy_password_hash: Arc<str>,
    pub broker: BrokerStatus,
    /// Wakes the outbox relay right after a transaction wrote outbox rows.
    pub outbox_wake: Arc<Notify>,
    pub login_throttle: Arc<LoginThrottle>,
}

impl AppState {
    pub async fn new(pool: PgPool, settings: Settings) -> anyhow::Result<Self> {
        let dummy = crate::auth::password::hash("timing-equaliser-not-a-password".into()).await?;
        Ok(Self {
            pool,
            jwt: Arc::new(JwtKeys::new(&settings.auth)),
            login_throttle: Arc::new(LoginThrottle::new(
                settings.auth.login_max_failures,
                settings.auth.login_lockout,
            )),
            settings: Arc::new(settings),
            dummy_password_hash: dummy.into(),
            broker: BrokerStatus::default(),
            outbox_wake: Arc::new(Notify::new()),
        })
    }
}
