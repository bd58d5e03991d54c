//! Bounds on open streams: so many per process and so many per user. A slot is held for
//! as long as its stream is open and given back when the stream ends, however it ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user holds as many streams as allowed (429).
    UserLimit,
    /// The process holds as many streams as allowed (503).
    ProcessLimit,
}

pub struct StreamSlots {
    process: Arc<Semaphore>,
    per_user: Arc<Mutex<HashMap<Uuid, usize>>>,
    per_user_limit: usize,
}

impl StreamSlots {
    pub fn new(process_limit: usize, per_user_limit: usize) -> Self {
        Self {
            process: Arc::new(Semaphore::new(process_limit)),
            per_user: Arc::default(),
            per_user_limit,
        }
    }

    pub fn take(&self, user: Uuid) -> Result<StreamSlot, Refusal> {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        let held = per_user.get(&user).copied().unwrap_or(0);
        if held >= self.per_user_limit {
            return Err(Refusal::UserLimit);
        }
        let permit = self
            .process
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ProcessLimit)?;
        per_user.insert(user, held + 1);
        metrics::gauge!("orderflow_live_streams").increment(1.0);
        Ok(StreamSlot {
            _permit: permit,
            user,
            per_user: self.per_user.clone(),
        })
    }
}

/// An open stream's place; dropping it frees the place.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    user: Uuid,
    per_user: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        // The map holds only users with open streams, so it never outgrows the process limit.
        if let Some(held) = per_user.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                per_user.remove(&self.user);
            }
        }
        metrics::gauge!("orderflow_live_streams").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_their_share_and_the_process_its_limit() {
        let slots = StreamSlots::new(3, 2);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = slots.take(alice).expect("first");
        let _second = slots.take(alice).expect("second");
        assert_eq!(slots.take(alice).err(), Some(Refusal::UserLimit));
        let _bobs = slots.take(bob).expect("bob's");
        assert_eq!(slots.take(bob).err(), Some(Refusal::ProcessLimit));
        drop(first);
        assert!(slots.take(alice).is_ok(), "a closed stream frees its slot");
    }
}
