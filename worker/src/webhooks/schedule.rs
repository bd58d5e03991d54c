//! What an attempt's outcome means for its delivery: done, retried when, or given up — the
//! rules, without I/O, so they are tested on their own.

use std::time::Duration;

use super::send::Answer;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A 2xx: the receiver has it.
    Delivered,
    /// 410 Gone: the receiver wants no more; the endpoint is disabled.
    Gone,
    /// Any other answer, or none: try again after this long.
    Retry(Duration),
    /// The schedule is spent.
    Failed,
}

/// The verdict on an attempt, `attempts_before` attempts into the schedule. Every failure
/// but 410 is retried — a receiver answering 401 or 404 is more often misconfigured for a
/// while than permanently gone — after the schedule's wait (±10 % by `jitter` in 0..1, so
/// retries of many deliveries spread out), or the receiver's `Retry-After` when longer,
/// up to the schedule's longest wait.
pub fn verdict(
    result: &Result<Answer, String>,
    attempts_before: usize,
    schedule: &[Duration],
    jitter: f64,
) -> Verdict {
    let retry_after = match result {
        Ok(answer) if answer.status.is_success() => return Verdict::Delivered,
        Ok(answer) if answer.status == reqwest::StatusCode::GONE => return Verdict::Gone,
        Ok(answer) => answer.retry_after,
        Err(_) => None,
    };
    let Some(wait) = schedule.get(attempts_before) else {
        return Verdict::Failed;
    };
    let longest = schedule.iter().max().copied().unwrap_or_default();
    let wait = wait.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0));
    Verdict::Retry(retry_after.map_or(wait, |asked| wait.max(asked.min(longest))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    const SCHEDULE: [Duration; 3] = [
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_secs(1800),
    ];

    fn answered(status: u16, retry_after: Option<u64>) -> Result<Answer, String> {
        Ok(Answer {
            status: StatusCode::from_u16(status).expect("a status"),
            retry_after: retry_after.map(Duration::from_secs),
            excerpt: String::new(),
        })
    }

    #[test]
    fn any_2xx_is_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(
                verdict(&answered(status, None), 0, &SCHEDULE, 0.5),
                Verdict::Delivered
            );
        }
    }

    #[test]
    fn gone_is_final_at_any_point() {
        assert_eq!(
            verdict(&answered(410, None), 0, &SCHEDULE, 0.5),
            Verdict::Gone
        );
        assert_eq!(
            verdict(&answered(410, None), 3, &SCHEDULE, 0.5),
            Verdict::Gone
        );
    }

    #[test]
    fn failures_follow_the_schedule_then_fail() {
        let timeout = Err("timed out".to_owned());
        for (before, expected) in [(0, 5), (1, 300), (2, 1800)] {
            assert_eq!(
                verdict(&timeout, before, &SCHEDULE, 0.5),
                Verdict::Retry(Duration::from_secs(expected))
            );
        }
        assert_eq!(verdict(&timeout, 3, &SCHEDULE, 0.5), Verdict::Failed);
        assert_eq!(
            verdict(&answered(500, None), 3, &SCHEDULE, 0.5),
            Verdict::Failed
        );
    }

    #[test]
    fn jitter_spreads_a_wait_by_a_tenth_either_way() {
        let error = Err("could not connect".to_owned());
        assert_eq!(
            verdict(&error, 1, &SCHEDULE, 0.0),
            Verdict::Retry(Duration::from_secs(270))
        );
        assert_eq!(
            verdict(&error, 1, &SCHEDULE, 1.0),
            Verdict::Retry(Duration::from_secs(330))
        );
    }

    #[test]
    fn retry_after_lengthens_a_wait_up_to_the_longest_in_the_schedule() {
        let wait = |asked| verdict(&answered(429, Some(asked)), 0, &SCHEDULE, 0.5);
        assert_eq!(wait(60), Verdict::Retry(Duration::from_secs(60)));
        assert_eq!(wait(1), Verdict::Retry(Duration::from_secs(5)));
        assert_eq!(wait(86_400), Verdict::Retry(Duration::from_secs(1800)));
    }

    #[test]
    fn client_errors_other_than_gone_are_retried() {
        for status in [400, 401, 404, 301] {
            assert!(matches!(
                verdict(&answered(status, None), 0, &SCHEDULE, 0.5),
                Verdict::Retry(_)
            ));
        }
    }
}
