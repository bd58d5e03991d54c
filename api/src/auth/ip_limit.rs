//! Per-client-address rate limits (login attempts, registrations), kept in memory per api
//! process with `governor`. IPv6 clients are keyed by their /64, the block one subscriber
//! usually holds, so rotating addresses inside it buys nothing.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::ApiError;

/// Addresses tracked before stale ones are dropped on the spot rather than at the next sweep.
const SWEEP_ABOVE: usize = 100_000;

pub struct IpRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl IpRateLimit {
    /// `count` requests per `period`, allowed as a burst and refilled evenly.
    pub fn new(count: u32, period: Duration) -> Self {
        let count = NonZeroU32::new(count.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period / count.get())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(count);
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Spends one request of `ip`'s budget, or answers 429 with the wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.limiter.len() > SWEEP_ABOVE {
            self.sweep();
        }
        self.limiter.check_key(&key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    /// Forgets addresses whose budget is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::from([
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_per_address_and_the_refusal_says_when_to_retry() {
        let limit = IpRateLimit::new(3, Duration::from_secs(60));
        let a: IpAddr = "203.0.113.1".parse().expect("ip");
        let b: IpAddr = "203.0.113.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        match limit.check(a) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => {
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limit.check(b).is_ok());
    }

    #[test]
    fn addresses_of_one_ipv6_subnet_share_a_budget() {
        let limit = IpRateLimit::new(1, Duration::from_secs(60));
        assert!(limit.check("2001:db8::1".parse().expect("ip")).is_ok());
        assert!(limit.check("2001:db8::ffff".parse().expect("ip")).is_err());
        assert!(limit.check("2001:db8:0:1::1".parse().expect("ip")).is_ok());
    }
}
