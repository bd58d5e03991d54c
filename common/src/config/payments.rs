//! Who moves the money: the `manual` provider (the default, nothing to configure) or Stripe,
//! and how long an order may wait to be paid.

use std::time::Duration;

use super::{ConfigError, Secret, invalid, webhooks::parse_duration};

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// `None` for the `manual` provider.
    pub stripe: Option<StripeSettings>,
    /// An order not authorised this long after its stock was reserved is cancelled
    /// (`payment_timeout`) and its stock released. Only a provider that authorises (Stripe)
    /// leaves orders waiting.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `sk_…`; sent only to `api_base`, never logged.
    pub secret_key: Secret,
    /// Webhook signing secrets (`whsec_…`): one, or the new and the old during a rotation.
    pub webhook_secrets: Vec<Secret>,
    /// Stripe's API, or a test server speaking it (localstripe).
    pub api_base: String,
    /// Longest one call to Stripe may take, connecting included.
    pub call_timeout: Duration,
}

impl PaymentSettings {
    /// The provider's name, as orders record it.
    pub fn provider(&self) -> &'static str {
        if self.stripe.is_some() {
            "stripe"
        } else {
            "manual"
        }
    }

    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let duration = |name: &'static str, default: &str| {
            let raw = lookup(name).unwrap_or_else(|| default.to_owned());
            parse_duration(&raw)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(name, &raw, "a duration like 30s, 30m or 2h"))
        };
        let provider = lookup("PAYMENT_PROVIDER").unwrap_or_else(|| "manual".into());
        let stripe = match provider.trim().to_lowercase().as_str() {
            "manual" => None,
            "stripe" => Some(StripeSettings {
                secret_key: required(lookup, "STRIPE_SECRET_KEY")?,
                webhook_secrets: required(lookup, "STRIPE_WEBHOOK_SECRET")?
                    .expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Secret::new)
                    .collect(),
                api_base: lookup("STRIPE_API_BASE")
                    .unwrap_or_else(|| "https://api.stripe.com".into())
                    .trim_end_matches('/')
                    .to_owned(),
                call_timeout: duration("STRIPE_TIMEOUT", "10s")?,
            }),
            other => return Err(invalid("PAYMENT_PROVIDER", other, "manual or stripe")),
        };
        if let Some(stripe) = &stripe
            && !(1..=2).contains(&stripe.webhook_secrets.len())
        {
            return Err(invalid(
                "STRIPE_WEBHOOK_SECRET",
                "…",
                "one signing secret, or two (new,old) during a rotation",
            ));
        }
        Ok(Self {
            stripe,
            timeout: duration("PAYMENT_TIMEOUT", "30m")?,
        })
    }
}

/// A secret that `PAYMENT_PROVIDER=stripe` cannot do without.
fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Secret, ConfigError> {
    lookup(name)
        .filter(|value| !value.trim().is_empty())
        .map(Secret::new)
        .ok_or(ConfigError::Missing {
            name,
            why: "PAYMENT_PROVIDER=stripe needs it (from the Stripe dashboard's Developers page)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<PaymentSettings, ConfigError> {
        PaymentSettings::from_lookup(&|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn manual_needs_no_configuration() {
        let payments = settings(&[]).expect("defaults are valid");
        assert_eq!(payments.provider(), "manual");
        assert_eq!(payments.timeout, Duration::from_secs(1800));
    }

    #[test]
    fn stripe_needs_its_key_and_one_or_two_webhook_secrets() {
        let error = settings(&[("PAYMENT_PROVIDER", "stripe")]).expect_err("no key");
        assert!(error.to_string().contains("STRIPE_SECRET_KEY"), "{error}");
        let key = ("STRIPE_SECRET_KEY", "sk_test_1");
        let error = settings(&[("PAYMENT_PROVIDER", "stripe"), key]).expect_err("no secret");
        assert!(
            error.to_string().contains("STRIPE_WEBHOOK_SECRET"),
            "{error}"
        );
        let three = ("STRIPE_WEBHOOK_SECRET", "whsec_a,whsec_b,whsec_c");
        assert!(settings(&[("PAYMENT_PROVIDER", "stripe"), key, three]).is_err());
        let two = ("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old");
        let payments = settings(&[("PAYMENT_PROVIDER", "Stripe"), key, two]).expect("valid");
        let stripe = payments.stripe.expect("stripe");
        assert_eq!(stripe.webhook_secrets.len(), 2);
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        assert!(
            !format!("{stripe:?}").contains("sk_test_1"),
            "the key is never printed"
        );
    }

    #[test]
    fn a_provider_or_timeout_it_does_not_know_is_refused() {
        assert!(settings(&[("PAYMENT_PROVIDER", "paypal")]).is_err());
        assert!(settings(&[("PAYMENT_TIMEOUT", "0s")]).is_err());
        assert!(settings(&[("PAYMENT_TIMEOUT", "soon")]).is_err());
    }
}
