//! Checks a webhook URL before it is saved: http(s), no credentials in it, and a host whose
//! every address is public (or allowed by `WEBHOOK_ALLOWED_HOSTS`). The worker checks the
//! addresses again at each delivery, since DNS answers change.

use std::{net::IpAddr, time::Duration};

use common::webhooks::{Allowlist, check_address};
use url::{Host, Url};

use crate::error::ApiError;

const MAX_URL_LENGTH: usize = 2048;
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL as it will be stored, or a 422 saying what is wrong with it.
pub async fn check_target(raw: &str, allowlist: &Allowlist) -> Result<String, ApiError> {
    let refuse = |message: String| ApiError::invalid("url", message);
    if raw.len() > MAX_URL_LENGTH {
        return Err(refuse(format!(
            "must be at most {MAX_URL_LENGTH} characters"
        )));
    }
    let url = Url::parse(raw.trim()).map_err(|e| refuse(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(refuse("must be an http or https URL".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "must not hold credentials; the signature authenticates deliveries".into(),
        ));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let (name, addresses): (String, Vec<IpAddr>) = match url.host() {
        None => return Err(refuse("must name a host".into())),
        Some(Host::Ipv4(v4)) => (v4.to_string(), vec![IpAddr::V4(v4)]),
        Some(Host::Ipv6(v6)) => (v6.to_string(), vec![IpAddr::V6(v6)]),
        Some(Host::Domain(domain)) => {
            let lookup = tokio::net::lookup_host((domain, port));
            let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|found| found.map(|a| a.ip()).collect::<Vec<_>>())
                .filter(|found| !found.is_empty())
                .ok_or_else(|| refuse(format!("host {domain} cannot be resolved")))?;
            (domain.to_owned(), found)
        }
    };
    for address in addresses {
        check_address(&name, address, allowlist).map_err(|refusal| refuse(refusal.to_string()))?;
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn field_message(raw: &str, allowlist: &Allowlist) -> Option<String> {
        match check_target(raw, allowlist).await {
            Ok(_) => None,
            Err(ApiError::Validation(errors)) => Some(errors[0].message.clone()),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let none = Allowlist::default();
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::ffff:10.0.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f000001/",
        ] {
            let message = field_message(url, &none).await.expect("refused");
            assert!(message.contains("not a public address"), "{url}: {message}");
        }
        let loopback = Allowlist::parse("127.0.0.1").expect("valid");
        assert_eq!(
            field_message("http://127.0.0.1:9000/hook", &loopback).await,
            None
        );
    }

    #[tokio::test]
    async fn only_plain_http_urls_without_credentials_pass() {
        let none = Allowlist::default();
        assert!(field_message("ftp://93.184.216.34/", &none).await.is_some());
        assert!(
            field_message("https://user:pw@93.184.216.34/", &none)
                .await
                .is_some()
        );
        assert!(field_message("not a url", &none).await.is_some());
        assert_eq!(
            field_message("https://93.184.216.34/hooks?x=1", &none).await,
            None
        );
    }
}
