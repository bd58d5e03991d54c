//! Where customers' order emails go — an SMTP server, or `.eml` files in a folder — and
//! what they say about the shop.

use std::{path::PathBuf, time::Duration};

use super::{ConfigError, Secret, invalid, parse};

#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `smtps://user:password@host:465` (implicit TLS), `smtp://user:password@host:587?tls=required`
    /// (STARTTLS) or `smtp://host:25` (no TLS: a relay on this machine); may hold a password.
    pub smtp_url: Option<Secret>,
    /// A PEM file of root certificates to trust besides the public ones, for a relay whose
    /// certificate a private CA signed.
    pub smtp_ca_file: Option<PathBuf>,
    /// Without an SMTP server, each email is written to this folder as an `.eml` file.
    /// Neither: no email leaves; the emails are still recorded, and go out once one is set.
    pub dir: Option<PathBuf>,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    pub shop_name: String,
    /// Where customers are told to write; also the emails' `Reply-To`.
    pub support_email: String,
    /// Wait before the first retry of a failed send; it doubles with each failure...
    pub retry_first: Duration,
    /// ...up to this.
    pub retry_max: Duration,
    /// An email still failing this long after its change is given up on.
    pub give_up_after: Duration,
    /// How long a mailer holds an email it is sending before another may take it: the
    /// time a mailer that died mid-send delays that email. Past the SMTP timeout (30 s),
    /// a slow send can be repeated (with the same Message-ID).
    pub claim: Duration,
}

impl EmailSettings {
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let shop_name = set("SHOP_NAME").unwrap_or_else(|| "Orderflow".to_owned());
        let from = set("EMAIL_FROM").unwrap_or_else(|| format!("{shop_name} <orders@localhost>"));
        let support_email = set("SUPPORT_EMAIL").unwrap_or_else(|| "support@localhost".to_owned());
        if !from.contains('@') {
            return Err(invalid(
                "EMAIL_FROM",
                &from,
                "an address, e.g. Shop <orders@example.com>",
            ));
        }
        if !support_email.contains('@') || support_email.contains(char::is_whitespace) {
            return Err(invalid(
                "SUPPORT_EMAIL",
                &support_email,
                "an address, e.g. help@example.com",
            ));
        }
        let smtp_url = set("SMTP_URL");
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(invalid(
                "SMTP_URL",
                "(hidden: it may hold a password)",
                "smtps://user:password@host:465, or smtp://user:password@host:587?tls=required",
            ));
        }
        Ok(Self {
            smtp_url: smtp_url.map(Secret::new),
            smtp_ca_file: set("SMTP_CA_FILE").map(PathBuf::from),
            dir: set("EMAIL_DIR").map(PathBuf::from),
            from,
            shop_name,
            support_email,
            retry_first: Duration::from_millis(parse(
                lookup,
                "EMAIL_RETRY_FIRST_MS",
                30_000,
                "milliseconds",
            )?),
            retry_max: Duration::from_millis(parse(
                lookup,
                "EMAIL_RETRY_MAX_MS",
                3_600_000,
                "milliseconds",
            )?),
            give_up_after: Duration::from_secs(
                3600 * parse::<u64>(lookup, "EMAIL_GIVE_UP_HOURS", 24, "hours")?,
            ),
            claim: Duration::from_secs(parse(lookup, "EMAIL_CLAIM_SECS", 120, "seconds")?),
        })
    }
}
