//! Field checks that collect every problem of a request before answering 422.

use crate::error::{ApiError, FieldError};

/// Gathers field errors; `finish` answers 422 with all of them, or `Ok`.
#[derive(Default)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    /// Checks that a string's length in characters lies in `min..=max`.
    pub fn length(&mut self, value: &str, field: &str, min: usize, max: usize) -> &mut Self {
        let len = value.chars().count();
        let ok = (min..=max).contains(&len);
        if !ok {
            let message = if min <= 1 {
                format!("must be at most {max} characters and not empty")
            } else {
                format!("must be {min} to {max} characters")
            };
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    /// A phone number: up to 20 digits, spaces and `+ - ( ) .`.
    pub fn phone(&mut self, value: &str, field: &str) -> &mut Self {
        let value = value.trim();
        self.length(value, field, 0, 20).check(
            value
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c)),
            field,
            "may hold only digits, spaces and + - ( ) .",
        )
    }

    pub fn email(&mut self, value: &str, field: &str) -> &mut Self {
        self.check(is_email(value), field, "must be a valid email address")
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(std::mem::take(&mut self.0)))
        }
    }
}

/// A pragmatic address check: one `@`, a non-empty local part, a dotted domain of valid labels.
pub fn is_email(value: &str) -> bool {
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.contains('.')
        && domain.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for good in [
            "a@b.co",
            "first.last+tag@mail.example.com",
            "x_y@sub-domain.io",
        ] {
            assert!(is_email(good), "{good}");
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@b.co",
            "a@",
            "a@b",
            "a b@c.io",
            "a@@b.io",
            "a@-b.io",
            ".a@b.io",
            "a..b@c.io",
            "a@b..io",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn collects_every_violation() {
        let mut v = Violations::new();
        v.length("ab", "username", 3, 50).email("nope", "email");
        match v.finish() {
            Err(ApiError::Validation(errors)) => assert_eq!(errors.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
