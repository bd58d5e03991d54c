//! The Orderflow worker: consumes order commands from RabbitMQ and applies them to PostgreSQL,
//! exactly once and in per-order sequence, whatever the number of competing workers.

pub mod consumer;
pub mod delivery;
pub mod handlers;
pub mod mail;
pub mod ops;
pub mod payments;
pub mod republish;
pub mod retention;
pub mod watchdog;
pub mod webhooks;
