//! Pieces shared by the Orderflow api and worker: settings, the database pool and
//! migrations, the RabbitMQ topology, telemetry, event envelopes and the domain types.

pub mod broker;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod domain;
pub mod events;
pub mod feed;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod shutdown;
pub mod stall;
pub mod stripe;
pub mod system_commands;
pub mod telemetry;
pub mod timeline;
pub mod webhooks;
