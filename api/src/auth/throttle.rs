//! Slows password guessing: after `LOGIN_MAX_FAILURES` failed logins for one account name
//! within `LOGIN_LOCKOUT_SECS`, further attempts for that name get 429 until the window
//! passes — even with the right password, or guessing would simply continue.
//! Kept in memory per api process.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::ApiError;

/// Entries beyond which expired ones are swept, bounding memory under a spray of names.
const SWEEP_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(login: &str) -> String {
        login.trim().to_lowercase()
    }

    /// 429 while `login` is locked out.
    pub fn check(&self, login: &str) -> Result<(), ApiError> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(&Self::key(login)) {
            Some((count, since))
                if *count >= self.max_failures && since.elapsed() < self.window =>
            {
                let remaining = self.window.saturating_sub(since.elapsed());
                Err(ApiError::TooManyRequests {
                    retry_after_secs: remaining.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, login: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, (_, since)| since.elapsed() < self.window);
        }
        let entry = failures
            .entry(Self::key(login))
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn reset(&self, login: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(&Self::key(login));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_and_is_case_insensitive() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(throttle.check("Alice").is_ok());
            throttle.record_failure("alice");
        }
        assert!(matches!(
            throttle.check("ALICE"),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(throttle.check("bob").is_ok());
    }

    #[test]
    fn a_success_clears_the_count_and_the_window_expires() {
        let throttle = LoginThrottle::new(2, Duration::from_millis(30));
        throttle.record_failure("carol");
        throttle.reset("carol");
        throttle.record_failure("carol");
        assert!(throttle.check("carol").is_ok());
        throttle.record_failure("carol");
        assert!(throttle.check("carol").is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(throttle.check("carol").is_ok());
    }
}
