//! Integration tests of the api against real PostgreSQL and RabbitMQ.

mod auth;
mod docs;
mod health;
mod helpers;
mod users;
