//! The Orderflow worker: consumes order commands from RabbitMQ and applies them to PostgreSQL.

pub mod consumer;
