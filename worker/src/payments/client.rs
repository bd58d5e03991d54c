//! Stripe's REST API, as the worker calls it: form-encoded requests with the secret key, an
//! `Idempotency-Key` on every write, a timeout, and `backon` retries of what Stripe says to
//! retry (429, 5xx, a connection that failed or timed out). Test servers speaking the same
//! API (localstripe) are reached through `STRIPE_API_BASE`.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use common::{
    config::StripeSettings,
    stripe::{PaymentIntent, Refund},
};
use reqwest::{Client, StatusCode};
use serde::de::DeserializeOwned;

/// Why a call did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Stripe refused it (a 4xx other than 429): repeating it cannot help.
    #[error("Stripe refused the call ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe could not be reached, or asked to retry; worth another try later.
    #[error("Stripe did not answer: {0}")]
    Unavailable(String),
}

pub struct StripeClient {
    http: Client,
    base: String,
    key: common::config::Secret,
}

impl StripeClient {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        crate::webhooks::install_tls_provider();
        let http = Client::builder()
            .timeout(settings.call_timeout)
            .connect_timeout(settings.call_timeout)
            .build()?;
        Ok(Self {
            http,
            base: settings.api_base.clone(),
            key: settings.secret_key.clone(),
        })
    }

    /// A PaymentIntent for `amount` with manual capture, carrying the order's id.
    pub async fn create_intent(
        &self,
        order_id: uuid::Uuid,
        amount: i64,
        currency: &str,
        key: &str,
    ) -> Result<PaymentIntent, CallError> {
        let form = [
            ("amount", amount.to_string()),
            ("currency", currency.to_lowercase()),
            ("capture_method", "manual".into()),
            ("metadata[order_id]", order_id.to_string()),
        ];
        self.post("/v1/payment_intents", &form, key).await
    }

    pub async fn capture(
        &self,
        intent: &str,
        amount: i64,
        key: &str,
    ) -> Result<PaymentIntent, CallError> {
        let form = [("amount_to_capture", amount.to_string())];
        self.post(&format!("/v1/payment_intents/{intent}/capture"), &form, key)
            .await
    }

    pub async fn cancel(&self, intent: &str, key: &str) -> Result<PaymentIntent, CallError> {
        self.post(&format!("/v1/payment_intents/{intent}/cancel"), &[], key)
            .await
    }

    pub async fn refund(&self, intent: &str, amount: i64, key: &str) -> Result<Refund, CallError> {
        let form = [
            ("payment_intent", intent.to_owned()),
            ("amount", amount.to_string()),
        ];
        self.post("/v1/refunds", &form, key).await
    }

    pub async fn retrieve(&self, intent: &str) -> Result<PaymentIntent, CallError> {
        let url = format!("{}/v1/payment_intents/{intent}", self.base);
        let attempt = || async {
            let response = self
                .http
                .get(&url)
                .basic_auth(self.key.expose(), None::<&str>)
                .send()
                .await;
            read(response).await
        };
        attempt.retry(backoff()).when(retryable).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        key: &str,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.base);
        let attempt = || async {
            let response = self
                .http
                .post(&url)
                .basic_auth(self.key.expose(), None::<&str>)
                .header("Idempotency-Key", key)
                .form(form)
                .send()
                .await;
            read(response).await
        };
        attempt.retry(backoff()).when(retryable).await
    }
}

/// Three quick retries within a call; the queue retries later beyond that.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(3)
        .with_jitter()
}

fn retryable(error: &CallError) -> bool {
    matches!(error, CallError::Unavailable(_))
}

async fn read<T: DeserializeOwned>(
    response: reqwest::Result<reqwest::Response>,
) -> Result<T, CallError> {
    // Errors carry no URL: it may name a PaymentIntent, never the key, but stay terse.
    let response = response.map_err(|e| CallError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| CallError::Unavailable(e.without_url().to_string()))?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(CallError::Unavailable(format!("HTTP {status}")));
    }
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "no message".into());
        return Err(CallError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_str(&body).map_err(|e| {
        CallError::Unavailable(format!("an answer that is not the object asked for: {e}"))
    })
}
