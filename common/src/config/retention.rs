//! How long rows that only grow are kept before the watchdog deletes them.

use std::time::Duration;

use super::{ConfigError, parse};

#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Published outbox rows (whose command is applied) older than this are deleted.
    pub outbox: Duration,
    /// Inbox rows (`processed_messages`) older than this are deleted. A duplicate arriving
    /// later is still refused by the order's applied sequence number; the inbox is what
    /// answers it cheaply, so keep rows well beyond any redelivery.
    pub inbox: Duration,
    /// Refresh tokens this long past their expiry are deleted.
    pub refresh_tokens: Duration,
    /// Notifications read this long ago are deleted.
    pub read_notifications: Duration,
    /// Order emails sent (or given up on) this long ago are deleted.
    pub emails: Duration,
    /// Webhook deliveries (and their attempts) created this long ago are deleted.
    pub webhook_deliveries: Duration,
    /// Live feed entries older than this are deleted: a stream that reconnects after longer
    /// resumes from the oldest kept (and should reload what it shows).
    pub live_feed: Duration,
}

impl RetentionSettings {
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let days = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                86_400 * parse::<u64>(lookup, name, default, "days")?,
            ))
        };
        Ok(Self {
            outbox: days("OUTBOX_RETENTION_DAYS", 7)?,
            inbox: days("INBOX_RETENTION_DAYS", 14)?,
            refresh_tokens: days("REFRESH_TOKEN_RETENTION_DAYS", 7)?,
            read_notifications: days("READ_NOTIFICATION_RETENTION_DAYS", 90)?,
            emails: days("EMAIL_RETENTION_DAYS", 30)?,
            webhook_deliveries: days("WEBHOOK_RETENTION_DAYS", 30)?,
            live_feed: days("LIVE_FEED_RETENTION_DAYS", 7)?,
        })
    }
}
