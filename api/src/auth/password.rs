//! Argon2id password hashing with OWASP parameters (19 MiB, t=2, p=1), always off the
//! async runtime, and bounded: each hash holds 19 MiB for its whole run, so an unbounded
//! burst of logins would take the process's memory with it.

use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context;
use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// What a sign-in naming no account is verified against, so that failure costs exactly what
/// a wrong password costs: a hash made with the same parameters (a test holds them equal).
/// A constant, where hashing one at start-up left 19 MiB of the api's memory resident.
pub const UNKNOWN_ACCOUNT_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$dH7SDDQ7fUXLHEkTEBR18A$SZb+PKsTx49sUpDE7pJnXjgDFVlP8sLq6hsVQq3Hy24";

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

/// A fixed pool of hashing threads with a bounded queue: `concurrency` hashes run at once,
/// `queue` more may wait, and anyone beyond that is told 503 at once.
///
/// Dedicated long-lived threads rather than tokio's blocking pool, which grows a new thread
/// whenever all are busy and is shared with other blocking work: here the number of
/// 19 MiB buffers alive at once is exactly `concurrency`.
pub struct PasswordWork {
    jobs: mpsc::SyncSender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

const BUSY: &str = "Too many sign-ins are being processed; retry in a moment.";

impl PasswordWork {
    /// Starts the threads; failing to start one fails start-up rather than leaving a pool
    /// that queues hashes nobody runs.
    pub fn new(concurrency: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        for n in 0..concurrency.max(1) {
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name(format!("password-{n}"))
                .spawn(move || {
                    // Ends when the last sender (the app state) is dropped.
                    while let Ok(job) = next_job(&inbox) {
                        // A panicking hash fails its caller (the sender drops), not the pool.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_now(&password)).await
    }

    pub async fn verify(&self, password: String, stored_hash: String) -> Result<bool, ApiError> {
        self.run(move || verify_now(&password, &stored_hash)).await
    }

    /// Queues `work` for the pool, or refuses at once when the queue is full. A client
    /// hanging up does not cancel queued work, so the bound holds either way.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone; nobody is left to tell.
            let _ = done.send(work());
        });
        self.jobs
            .try_send(job)
            .map_err(|_| ApiError::Unavailable(BUSY))?;
        result
            .await
            .context("password hashing thread stopped")?
            .map_err(ApiError::Internal)
    }
}

fn next_job(inbox: &Mutex<mpsc::Receiver<Job>>) -> Result<Job, mpsc::RecvError> {
    inbox
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .recv()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let work = PasswordWork::new(1, 1).expect("pool");
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

    #[test]
    fn the_unknown_account_hash_costs_what_a_fresh_hash_costs() {
        let fresh = hash_now("anything").expect("hash");
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(UNKNOWN_ACCOUNT_HASH), params(&fresh));
        assert!(!verify_now("anything", UNKNOWN_ACCOUNT_HASH).expect("a valid hash"));
    }

    #[tokio::test]
    async fn requests_beyond_the_slots_and_the_queue_are_refused_at_once() {
        let work = Arc::new(PasswordWork::new(1, 1).expect("pool"));
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
