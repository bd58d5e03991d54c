//! Integration tests of the api against real PostgreSQL and RabbitMQ.

mod abuse;
mod access_matrix;
mod auth;
mod console;
mod dead_letters;
mod docs;
mod fault;
mod health;
mod helpers;
mod idempotency;
mod live;
mod mail;
mod metrics;
mod notifications;
mod orders;
mod pipeline;
mod products;
mod relay;
mod retention;
mod retry_tiers;
mod sessions;
mod shutdown;
mod stalled;
mod users;
mod webhooks;
mod worker_handlers;
