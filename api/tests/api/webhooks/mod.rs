//! Webhooks end to end: the api, a worker and a real HTTP receiver on loopback (allowed by
//! `WEBHOOK_ALLOWED_HOSTS`, as the SSRF guard refuses loopback otherwise). Signatures are
//! checked with the Standard Webhooks reference library (`standardwebhooks` crate).

mod delivery;
mod endpoints;
mod failures;
mod receiver;

use std::time::Duration;

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use standardwebhooks::Webhook;

use crate::helpers::{TestApp, TestUser, test_settings, wait_until};
pub use receiver::{Received, Receiver};

/// Retries compressed from a day to well under a second, loopback allowed.
pub(crate) const FAST: [(&str, &str); 2] = [
    ("WEBHOOK_RETRY_SCHEDULE", "100ms,200ms,300ms"),
    ("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1"),
];

pub(crate) struct Shop {
    pub app: TestApp,
    pub admin: TestUser,
    pub vendor: TestUser,
    pub alice: TestUser,
}

/// The api and one worker with `overrides` (after `FAST`), an admin, a vendor, alice and
/// a product `LAMP` with 50 in stock.
pub(crate) async fn shop(pool: &PgPool, overrides: &[(&str, &str)]) -> Shop {
    let settings: Vec<(&str, &str)> = overrides.iter().chain(FAST.iter()).copied().collect();
    let app = TestApp::start(pool.clone(), test_settings(&settings), true).await;
    app.start_workers(1);
    let admin = app.user(Role::Admin, "root").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 50).await;
    Shop {
        app,
        admin,
        vendor,
        alice,
    }
}

impl Shop {
    /// Registers an endpoint for `types` (all when empty); returns its id and secret.
    pub async fn endpoint(&self, url: &str, types: &[&str]) -> (String, String) {
        let body = json!({ "url": url, "event_types": types, "description": "warehouse" });
        let response = self
            .app
            .post("/api/webhooks", Some(&self.admin.token), body)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.expect("endpoint");
        let secret = created["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("whsec_"));
        (created["id"].as_str().expect("id").to_owned(), secret)
    }

    /// The kind of the admin's newest notification.
    pub async fn admins_latest_notification(&self) -> String {
        let notifications: Value = self
            .app
            .get("/api/notifications", &self.admin.token)
            .await
            .json()
            .await
            .expect("notifications");
        notifications["items"][0]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn endpoint_state(&self, id: &str) -> Value {
        let path = format!("/api/webhooks/{id}");
        self.app
            .get(&path, &self.admin.token)
            .await
            .json()
            .await
            .expect("endpoint")
    }

    pub async fn deliveries(&self, id: &str, query: &str) -> Value {
        let path = format!("/api/webhooks/{id}/deliveries{query}");
        let response = self.app.get(&path, &self.admin.token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("deliveries")
    }

    /// Waits until the endpoint has `count` deliveries in `status`.
    pub async fn wait_for_deliveries(&self, id: &str, status: &str, count: i64) -> Value {
        let query = format!("?status={status}&size=100");
        wait_until(
            &format!("{count} deliveries {status}"),
            Duration::from_secs(20),
            || async { self.deliveries(id, &query).await["total"] == count },
        )
        .await;
        self.deliveries(id, &query).await
    }
}

pub(crate) fn verifies(secret: &str, received: &Received) -> bool {
    Webhook::new(secret)
        .expect("a secret")
        .verify(&received.body, &received.headers)
        .is_ok()
}
