//! Shared application state handed to every handler.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use common::{config::Settings, relay::BrokerStatus};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{ip_limit::IpRateLimit, jwt::JwtKeys, password::PasswordWork, throttle::AccountLimit},
    live::{Hub, StreamSlots},
    routes::orders::OrderWriter,
};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub jwt: Arc<JwtKeys>,
    pub broker: BrokerStatus,
    /// Wakes the outbox relay right after a transaction wrote outbox rows.
    pub outbox_wake: Arc<Notify>,
    pub guards: Arc<Guards>,
    /// Writes placed orders together (group commit).
    pub orders: OrderWriter,
    /// Live order updates, fed from the broker by `Hub::run`.
    pub hub: Arc<Hub>,
    pub streams: Arc<StreamSlots>,
    /// Ends every open stream; `serve` cancels it when shutdown begins.
    pub streams_end: CancellationToken,
}

/// The bounds that keep one client from taking the server down.
pub struct Guards {
    /// Requests being served; beyond its permits the answer is 503.
    pub in_flight: Arc<Semaphore>,
    pub passwords: PasswordWork,
    pub accounts: AccountLimit,
    pub login_per_ip: IpRateLimit,
    pub register_per_ip: IpRateLimit,
    /// Dead-letter operations (each with its own broker connection) run one at a time.
    pub dead_letters: Arc<Semaphore>,
}

impl Guards {
    fn new(settings: &Settings) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        Ok(Self {
            in_flight: Arc::new(Semaphore::new(settings.http.max_in_flight)),
            passwords: PasswordWork::new(auth.password_hash_concurrency, auth.password_hash_queue)
                .context("starting the password hashing threads")?,
            accounts: AccountLimit::new(auth.login_max_failures, auth.login_lockout),
            login_per_ip: IpRateLimit::new(auth.login_per_ip_per_minute, Duration::from_secs(60)),
            register_per_ip: IpRateLimit::new(
                auth.register_per_ip_per_hour,
                Duration::from_secs(3600),
            ),
            dead_letters: Arc::new(Semaphore::new(1)),
        })
    }
}

impl AppState {
    pub fn new(pool: PgPool, settings: Settings) -> anyhow::Result<Self> {
        Ok(Self {
            orders: OrderWriter::start(
                pool.clone(),
                settings.http.order_writers,
                settings.http.max_in_flight,
            ),
            pool,
            hub: Arc::default(),
            streams: Arc::new(StreamSlots::new(
                settings.http.max_streams,
                settings.http.max_streams_per_user,
            )),
            streams_end: CancellationToken::new(),
            jwt: Arc::new(JwtKeys::new(&settings.auth)),
            guards: Arc::new(Guards::new(&settings)?),
            settings: Arc::new(settings),
            broker: BrokerStatus::default(),
            outbox_wake: Arc::new(Notify::new()),
        })
    }
}
