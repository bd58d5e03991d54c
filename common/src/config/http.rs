//! HTTP server settings: listener, CORS origins (validated at start-up), load limits and
//! the proxies whose `X-Forwarded-For` may be believed.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;

use super::{ConfigError, invalid, parse};

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Allowed browser origins (`scheme://host[:port]`); `["*"]` allows any.
    pub cors_origins: Vec<String>,
    pub body_limit_bytes: usize,
    /// Requests served at once; beyond it the answer is 503 with `Retry-After`. 256 by
    /// default: two cores serve about 1,000 orders/s, and past that every waiting request
    /// holds its connection's buffers (512 let the api grow to 77 MiB at 1,000/s, 256 to 55).
    pub max_in_flight: usize,
    /// Tasks writing placed orders to the database, each a batch at a time (group commit:
    /// the orders that arrive while a batch is written form the next one).
    pub order_writers: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Peers allowed to name the client in `X-Forwarded-For` (load balancers, proxies).
    pub trusted_proxies: Vec<IpNet>,
    /// Live order streams (SSE) open at once in this process; beyond it 503.
    pub max_streams: usize,
    /// Live order streams one user may hold open at once (tabs, devices); beyond it 429.
    pub max_streams_per_user: usize,
    /// How often an open stream checks that its user may still watch (active, same role
    /// and token version); one that may not is ended.
    pub stream_recheck: Duration,
}

impl HttpSettings {
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        Ok(Self {
            host: get("HOST", "127.0.0.1"),
            port: parse(lookup, "PORT", 8000, "a port number")?,
            cors_origins: cors_origins(&get("CORS_ORIGINS", "http://localhost:3000"))?,
            body_limit_bytes: parse(lookup, "BODY_LIMIT_BYTES", 256 * 1024, "bytes")?,
            max_in_flight: parse(lookup, "MAX_IN_FLIGHT_REQUESTS", 256, "a whole number")?,
            order_writers: parse(lookup, "ORDER_WRITERS", 2, "a whole number")?,
            request_timeout: Duration::from_millis(parse(
                lookup,
                "REQUEST_TIMEOUT_MS",
                20_000,
                "milliseconds",
            )?),
            trusted_proxies: trusted_proxies(&get("TRUSTED_PROXIES", ""))?,
            max_streams: parse(lookup, "STREAM_MAX_OPEN", 1_000, "a whole number")?,
            max_streams_per_user: parse(lookup, "STREAM_MAX_PER_USER", 5, "a whole number")?,
            stream_recheck: Duration::from_secs(parse(
                lookup,
                "STREAM_RECHECK_SECS",
                60,
                "seconds",
            )?),
        })
    }

    /// Whether the listener is reachable from this machine only.
    pub fn listens_on_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    }
}

/// Comma-separated origins, each `http(s)://host[:port]` with no path, or `*` alone.
fn cors_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let origins: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(str::to_owned)
        .collect();
    let any = origins.iter().any(|origin| origin == "*");
    if any && origins.len() > 1 {
        return Err(invalid(
            "CORS_ORIGINS",
            raw,
            "either * alone or a list of origins, not both",
        ));
    }
    if let Some(bad) = origins.iter().find(|o| *o != "*" && !is_origin(o)) {
        return Err(invalid(
            "CORS_ORIGINS",
            bad,
            "origins of the form https://shop.example.com or http://localhost:3000 (scheme, host, optional port; no path)",
        ));
    }
    Ok(origins)
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
        && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

/// Comma-separated CIDRs or single addresses.
fn trusted_proxies(raw: &str) -> Result<Vec<IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        "TRUSTED_PROXIES",
                        entry,
                        "CIDRs or addresses, e.g. 10.0.0.0/8,192.168.1.10",
                    )
                })
        })
        .collect()
}
