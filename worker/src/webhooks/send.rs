//! One HTTP attempt at a webhook: POST with the Standard Webhooks headers, no redirects, a
//! timeout, and only to addresses the SSRF guard allows — checked on the very addresses the
//! connection then uses (the resolver below is the client's only way to find a host).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use common::{
    config::WebhookSettings,
    webhooks::{Allowlist, check_address},
};
use reqwest::{
    Client, StatusCode, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER},
    redirect::Policy,
};

/// Response bytes kept in the delivery log.
const EXCERPT_BYTES: usize = 1024;

/// What the receiver answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `Retry-After`, in seconds or as a date, as a wait from now.
    pub retry_after: Option<Duration>,
    pub excerpt: String,
}

/// The outcome of one attempt and how long it took.
pub struct Attempt {
    pub result: Result<Answer, String>,
    pub latency: Duration,
}

/// The headers of one delivery.
pub struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
}

pub struct Sender {
    client: Client,
    allowlist: Allowlist,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Self> {
        install_tls_provider();
        let allowlist = settings.allowed_hosts.clone();
        let client = Client::builder()
            .redirect(Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allowlist: allowlist.clone(),
            }))
            .user_agent(concat!("Orderflow-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, allowlist })
    }

    pub async fn post(&self, url: &str, signed: &Signed<'_>, body: String) -> Attempt {
        let started = Instant::now();
        let result = self.try_post(url, signed, body).await;
        Attempt {
            result,
            latency: started.elapsed(),
        }
    }

    async fn try_post(
        &self,
        url: &str,
        signed: &Signed<'_>,
        body: String,
    ) -> Result<Answer, String> {
        let url = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        // An address written in the URL is connected to without resolving: check it here.
        if let Some(host) = url.host_str() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(address) = bare.parse::<IpAddr>() {
                check_address(bare, address, &self.allowlist).map_err(|e| e.to_string())?;
            }
        }
        let mut response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", signed.id)
            .header("webhook-timestamp", signed.timestamp.to_string())
            .header("webhook-signature", signed.signature)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), Utc::now());
        let mut excerpt = Vec::new();
        // Only the first bytes: a receiver answering with a huge body costs nothing more.
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        excerpt.truncate(EXCERPT_BYTES);
        Ok(Answer {
            status,
            retry_after,
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        })
    }
}

/// Makes ring the process's TLS crypto provider. reqwest's rustls backend (built without
/// aws-lc, which needs a C toolchain) takes the process-wide provider, and panics when a
/// client is built without one — in any crate of this workspace, since Cargo unifies the
/// feature: call this before building a `reqwest::Client`. Calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The error with its causes (where the guard's refusal is), never with the URL's query.
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as a wait: delay-seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

/// Resolves with the system resolver and refuses the host when any of its addresses is
/// not allowed, so what the client connects to is exactly what was checked.
struct GuardedResolver {
    allowlist: Allowlist,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowlist = self.allowlist.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            for address in &addresses {
                check_address(host, address.ip(), &allowlist)?;
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(value).expect("a header value"),
        );
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:49:37Z")
            .expect("a date")
            .with_timezone(&Utc);
        assert_eq!(
            retry_after(&with_retry_after("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&with_retry_after("Thu, 26 Nov 2026 08:50:37 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
