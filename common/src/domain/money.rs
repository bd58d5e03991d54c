//! Money as integer minor units (cents); decimal strings with two places on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use utoipa::{PartialSchema, ToSchema, openapi};

/// An amount in minor units (e.g. cents). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Why a decimal string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a decimal amount with at most two decimal places, like \"25.00\"")]
    Malformed,
    #[error("is too large (at most 999999999999999.99)")]
    Overflow,
    #[error("must not be negative")]
    Negative,
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount: 15 whole digits, as the API documents every amount (prices,
    /// line totals, order totals), so none it writes can break its own schema.
    pub const MAX: Money = Money(99_999_999_999_999_999);

    pub fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    /// Parses `"25"`, `"25.5"` or `"25.50"`; refuses negatives, signs and more than two places.
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let text = text.trim();
        if text.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 {
            return Err(MoneyError::Malformed);
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(MoneyError::Malformed);
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::Overflow)?;
        let cents: i64 = format!("{fraction:0<2}")
            .parse()
            .map_err(|_| MoneyError::Malformed)?;
        whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(cents))
            .map(Money)
            .filter(|amount| *amount <= Money::MAX)
            .ok_or(MoneyError::Overflow)
    }

    /// `self × quantity`, or `None` past [`Money::MAX`].
    pub fn times(self, quantity: i64) -> Option<Money> {
        self.0
            .checked_mul(quantity)
            .map(Money)
            .filter(|amount| *amount <= Money::MAX)
    }

    /// `self + other`, or `None` past [`Money::MAX`].
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0
            .checked_add(other.0)
            .map(Money)
            .filter(|amount| *amount <= Money::MAX)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts a decimal string (preferred) or a JSON number, which is read through its
    /// shortest decimal form so `19.99` stays exactly 1999 cents.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Integer(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Integer(n) => n.to_string(),
            Raw::Float(f) if f < 0.0 => return Err(de::Error::custom(MoneyError::Negative)),
            Raw::Float(f) => f.to_string(),
        };
        Money::parse(&text).map_err(de::Error::custom)
    }
}

impl PartialSchema for Money {
    /// What `Deserialize` accepts: a decimal string (as every response carries it) or a
    /// non-negative JSON number, each with at most two decimal places.
    fn schema() -> openapi::RefOr<openapi::schema::Schema> {
        let text = openapi::ObjectBuilder::new()
            .schema_type(openapi::schema::Type::String)
            .pattern(Some(r"^\d{1,15}(\.\d{1,2})?$"))
            .examples(["25.00"]);
        let number = openapi::ObjectBuilder::new()
            .schema_type(openapi::schema::Type::Number)
            .minimum(Some(0.0))
            .exclusive_maximum(Some(1e15));
        openapi::schema::OneOfBuilder::new()
            .item(text)
            .item(number)
            .description(Some(
                "Decimal amount with at most two places: a string such as \"25.00\" (what \
                 responses carry), or in requests a JSON number such as 25.5",
            ))
            .into()
    }
}

impl ToSchema for Money {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_amount_goes_past_fifteen_whole_digits() {
        assert_eq!(Money::parse("999999999999999.99"), Ok(Money::MAX));
        assert_eq!(Money::parse("1000000000000000"), Err(MoneyError::Overflow));
        assert_eq!(Money::MAX.checked_add(Money(1)), None);
        assert_eq!(Money::MAX.times(2), None);
        assert_eq!(Money(50).times(3), Some(Money(150)));
    }

    #[test]
    fn parses_whole_and_fractional_amounts() {
        assert_eq!(Money::parse("25"), Ok(Money(2500)));
        assert_eq!(Money::parse("25.5"), Ok(Money(2550)));
        assert_eq!(Money::parse("25.05"), Ok(Money(2505)));
        assert_eq!(Money::parse("0.99"), Ok(Money(99)));
    }

    #[test]
    fn refuses_malformed_negative_and_overprecise_amounts() {
        for bad in ["", ".5", "5.", "1.234", "1e3", "+1", "abc", "1.2.3", " "] {
            assert_eq!(Money::parse(bad), Err(MoneyError::Malformed), "{bad:?}");
        }
        assert_eq!(Money::parse("-1.00"), Err(MoneyError::Negative));
        assert_eq!(
            Money::parse("99999999999999999999"),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn displays_two_decimal_places() {
        assert_eq!(Money(2500).to_string(), "25.00");
        assert_eq!(Money(5).to_string(), "0.05");
        assert_eq!(Money(-150).to_string(), "-1.50");
    }

    #[test]
    fn json_numbers_and_strings_both_parse_exactly() {
        let from_number: Money = serde_json::from_str("19.99").expect("number");
        let from_string: Money = serde_json::from_str("\"19.99\"").expect("string");
        let from_integer: Money = serde_json::from_str("20").expect("integer");
        assert_eq!(from_number, Money(1999));
        assert_eq!(from_string, Money(1999));
        assert_eq!(from_integer, Money(2000));
        assert!(serde_json::from_str::<Money>("-1").is_err());
        assert!(serde_json::from_str::<Money>("0.001").is_err());
    }

    #[test]
    fn the_schema_documents_both_forms_it_accepts() {
        let schema = serde_json::to_value(Money::schema()).expect("schema");
        let kinds: Vec<&str> = schema["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .filter_map(|branch| branch["type"].as_str())
            .collect();
        assert_eq!(kinds, ["string", "number"]);
        assert_eq!(schema["oneOf"][1]["minimum"], 0.0);
    }

    #[test]
    fn serializes_as_a_decimal_string() {
        assert_eq!(
            serde_json::to_string(&Money(2500)).expect("json"),
            "\"25.00\""
        );
    }

    #[test]
    fn arithmetic_reports_overflow() {
        assert_eq!(Money(250).times(3), Some(Money(750)));
        assert_eq!(Money(i64::MAX).times(2), None);
        assert_eq!(Money(1).checked_add(Money(i64::MAX)), None);
    }
}
