//! The api assembled: its state, the HTTP server and the tasks that run beside it (the
//! outbox relay, the live hub, housekeeping, the backlog gauges), built and run the same way
//! by `main` and by the test harness.

use std::net::SocketAddr;

use anyhow::Context;
use common::{config::Settings, outbox, relay::Relay};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub struct Application {
    pub state: AppState,
    listener: TcpListener,
    broker: bool,
}

impl Application {
    /// The api on `pool` (migrated), answering on `listener`.
    pub fn build(pool: PgPool, settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        common::metrics::handle();
        common::relay::zero_counters();
        if settings.payments.stripe.is_some() {
            crate::routes::stripe::zero_counters();
        }
        Ok(Application {
            state: AppState::new(pool, settings)?,
            listener,
            broker: true,
        })
    }

    /// Leaves RabbitMQ out: no outbox relay and no live hub, so readiness reports the broker
    /// down and commands wait in the outbox (for tests of the api alone).
    pub fn without_broker(mut self) -> Self {
        self.broker = false;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`. The relay stops only after the server has drained, so it can
    /// publish what the last requests wrote.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            state,
            listener,
            broker,
        } = self;
        tokio::spawn(outbox::export_backlog(state.pool.clone(), shutdown.clone()));
        tokio::spawn(crate::housekeeping::run(state.clone(), shutdown.clone()));
        let relay_stop = CancellationToken::new();
        let relay_task = broker.then(|| {
            tokio::spawn(state.hub.clone().run(
                state.pool.clone(),
                state.settings.clone(),
                shutdown.clone(),
            ));
            let relay = Relay {
                pool: state.pool.clone(),
                settings: state.settings.clone(),
                status: state.broker.clone(),
                wake: state.outbox_wake.clone(),
                name: "api outbox relay",
            };
            tokio::spawn(relay.run(relay_stop.clone()))
        });
        crate::serve(listener, state, shutdown).await?;
        relay_stop.cancel();
        if let Some(relay_task) = relay_task {
            relay_task.await.context("outbox relay panicked")?;
        }
        Ok(())
    }
}
