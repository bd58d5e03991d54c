//! How webhooks are delivered: timeouts, the retry schedule, when a failing endpoint is
//! switched off, and which private addresses may be targets.

use std::time::Duration;

use super::{ConfigError, invalid, parse};
use crate::webhooks::Allowlist;

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Longest one delivery attempt may take, connecting included.
    pub timeout: Duration,
    /// The waits before each retry of a failed delivery; after the last, it is failed.
    pub retry_schedule: Vec<Duration>,
    /// An endpoint with no success for this long is disabled and admins are notified.
    pub disable_after: Duration,
    /// After a secret rotation, deliveries carry signatures by both secrets this long.
    pub secret_overlap: Duration,
    /// Deliveries one worker sends at once.
    pub concurrency: usize,
    /// Where webhooks may go: public addresses (unless `WEBHOOK_PUBLIC_TARGETS=false`) and
    /// the targets listed in `WEBHOOK_ALLOWED_HOSTS` although private.
    pub allowed_hosts: Allowlist,
}

/// Standard Webhooks' suggested schedule: retries for a little over a day.
const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";
const DURATION_HINT: &str = "a duration like 500ms, 5s, 5m, 2h or 3d";

impl WebhookSettings {
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let duration = |name: &'static str, default: &str| {
            let raw = lookup(name).unwrap_or_else(|| default.to_owned());
            parse_duration(&raw).ok_or_else(|| invalid(name, &raw, DURATION_HINT))
        };
        let schedule = lookup("WEBHOOK_RETRY_SCHEDULE").unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        let retry_schedule = schedule
            .split(',')
            .map(parse_duration)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                invalid(
                    "WEBHOOK_RETRY_SCHEDULE",
                    &schedule,
                    "comma-separated durations, e.g. 5s,5m,30m,2h,5h,10h,10h",
                )
            })?;
        let allowed = lookup("WEBHOOK_ALLOWED_HOSTS").unwrap_or_default();
        let public_targets: bool = parse(lookup, "WEBHOOK_PUBLIC_TARGETS", true, "true or false")?;
        Ok(Self {
            timeout: duration("WEBHOOK_TIMEOUT", "10s")?,
            retry_schedule,
            disable_after: duration("WEBHOOK_DISABLE_AFTER", "5d")?,
            secret_overlap: duration("WEBHOOK_SECRET_OVERLAP", "24h")?,
            concurrency: parse(lookup, "WEBHOOK_CONCURRENCY", 16, "a whole number")?.max(1),
            allowed_hosts: Allowlist::parse(&allowed)
                .map(|list| if public_targets { list } else { list.only_listed() })
                .ok_or_else(|| {
                    invalid(
                        "WEBHOOK_ALLOWED_HOSTS",
                        &allowed,
                        "comma-separated host names, addresses or networks, e.g. localhost,10.0.0.0/8",
                    )
                })?,
        })
    }
}

/// `500ms`, `5s`, `5m`, `2h`, `3d`.
pub(super) fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(unit_ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("3d"), Some(Duration::from_secs(259_200)));
        for bad in ["", "5", "m", "5 weeks", "-5s", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let settings = WebhookSettings::from_lookup(&|_| None).expect("defaults are valid");
        let total: Duration = settings.retry_schedule.iter().sum();
        assert!(total > Duration::from_secs(86_400) && total < Duration::from_secs(2 * 86_400));
    }
}
