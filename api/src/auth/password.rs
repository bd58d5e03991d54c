//! Argon2id password hashing with OWASP parameters (19 MiB, t=2, p=1), always off the
//! async runtime, and bounded: each hash holds 19 MiB for its whole run, so an unbounded
//! burst of logins would take the process's memory with it.

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Hashes `password` into a PHC string (`$argon2id$…`) with a fresh random salt.
/// Unbounded: for operator commands and start-up; requests go through [`PasswordWork`].
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .context("password hashing task failed")?
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Checks `password` against a stored PHC hash. Costs the same whether or not it matches.
fn verify_now(password: &str, stored_hash: &str) -> anyhow::Result<bool> {
    let parsed =
        PasswordHash::new(stored_hash).map_err(|e| anyhow::anyhow!("stored hash invalid: {e}"))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// Admission control for password hashing: `concurrency` hashes run at once, `queue` more
/// may wait for a slot, and anyone beyond that is told 503 at once.
pub struct PasswordWork {
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

const BUSY: &str = "Too many sign-ins are being processed; retry in a moment.";

impl PasswordWork {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            admitted: Arc::new(Semaphore::new(concurrency + queue)),
            running: Arc::new(Semaphore::new(concurrency)),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_now(&password)).await
    }

    pub async fn verify(&self, password: String, stored_hash: String) -> Result<bool, ApiError> {
        self.run(move || verify_now(&password, &stored_hash)).await
    }

    /// Runs `work` on a blocking thread once a slot is free. The permits move into the
    /// blocking task, so a client hanging up does not free a slot whose hash still runs.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let admitted: OwnedSemaphorePermit = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable(BUSY))?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable(BUSY))?;
        tokio::task::spawn_blocking(move || {
            let _slots = (admitted, running);
            work()
        })
        .await
        .context("password hashing task failed")?
        .map_err(ApiError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let work = PasswordWork::new(1, 0);
        let hash = work.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            work.verify("correct horse".into(), hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !work
                .verify("wrong horse".into(), hash)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_slots_and_the_queue_are_refused_at_once() {
        let work = Arc::new(PasswordWork::new(1, 1));
        let attempts: Vec<_> = (0..6)
            .map(|_| {
                let work = work.clone();
                tokio::spawn(async move { work.hash("burst".into()).await })
            })
            .collect();
        let mut refused = 0;
        for attempt in attempts {
            if let Err(ApiError::Unavailable(_)) = attempt.await.expect("task") {
                refused += 1;
            }
        }
        assert!(
            refused >= 4,
            "only {refused} of 6 refused with 1 slot + 1 queued"
        );
    }
}
