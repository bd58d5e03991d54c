//! The money on an order as one pure function: what each payment operation does to the
//! amounts authorised, captured and refunded, and which operations are possible at all.
//!
//! ```text
//! unpaid ─authorize─▶ authorized ─capture─▶ partially_paid / paid ─refund─▶ partially_refunded ─▶ refunded
//!   │  └─fail─▶ failed ─authorize─▶ …       └─void─▶ voided (nothing captured)
//!   └─receive (money taken outside a provider: authorised and captured at once)─▶ partially_paid / paid
//! ```
//!
//! Amounts are integer minor units. Every operation keeps `0 ≤ refunded ≤ captured ≤
//! authorized ≤ total`; the database's check constraints hold the same, so no code path can
//! write money that drifts (outstanding amounts wrong, refunds of what was never taken).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "payment_status", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing authorised or received.
    Unpaid,
    /// Money is held for the order and not yet taken.
    Authorized,
    /// Part of the total has been taken.
    PartiallyPaid,
    /// The whole total has been taken.
    Paid,
    /// Part of what was taken has been given back.
    PartiallyRefunded,
    /// Everything taken has been given back.
    Refunded,
    /// The authorisation was released before anything was taken.
    Voided,
    /// The authorisation was declined.
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Unpaid,
        PaymentStatus::Authorized,
        PaymentStatus::PartiallyPaid,
        PaymentStatus::Paid,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Voided,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Unpaid => "unpaid",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::PartiallyPaid => "partially_paid",
            PaymentStatus::Paid => "paid",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider (or staff, for money taken by hand) did with an order's money; each is
/// one entry of the order's ledger. Amounts in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The provider holds `amount` for the order; nothing is taken yet.
    Authorize(i64),
    /// The provider declined to authorise.
    Fail,
    /// Take `amount` of what is held.
    Capture(i64),
    /// Release what is held and not taken.
    Void,
    /// Money taken outside a provider (cash on delivery, an invoice paid): held and taken
    /// at once.
    Receive(i64),
    /// Give back `amount` of what was taken.
    Refund(i64),
}

impl Operation {
    /// The ledger's name for the operation.
    pub fn kind(self) -> &'static str {
        match self {
            Operation::Authorize(_) => "authorization",
            Operation::Fail => "failure",
            Operation::Capture(_) => "capture",
            Operation::Void => "void",
            Operation::Receive(_) => "receipt",
            Operation::Refund(_) => "refund",
        }
    }

    /// The amount the ledger records (what is released, for a void, is not known here).
    pub fn amount(self) -> i64 {
        match self {
            Operation::Authorize(amount)
            | Operation::Capture(amount)
            | Operation::Receive(amount)
            | Operation::Refund(amount) => amount,
            Operation::Fail | Operation::Void => 0,
        }
    }
}

/// Why an operation cannot apply; the payment is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the amount must be positive")]
    NotPositive,
    #[error("{amount} is more than the {outstanding} still to pay")]
    ExceedsOutstanding { amount: i64, outstanding: i64 },
    #[error("{amount} is more than the {capturable} authorised and not yet captured")]
    ExceedsAuthorized { amount: i64, capturable: i64 },
    #[error("{amount} is more than the {refundable} captured and not yet refunded")]
    ExceedsCaptured { amount: i64, refundable: i64 },
    #[error("a payment that is {0} cannot be {1}")]
    NotNow(PaymentStatus, &'static str),
    #[error("{captured} is taken, more than the {total} the order would come to")]
    CapturedBeyondTotal { captured: i64, total: i64 },
}

impl PaymentError {
    /// A short machine-readable reason, for problem documents and the timeline.
    pub fn code(self) -> &'static str {
        match self {
            PaymentError::NotPositive => "amount_not_positive",
            PaymentError::ExceedsOutstanding { .. } => "payment_exceeds_outstanding",
            PaymentError::ExceedsAuthorized { .. } => "capture_exceeds_authorized",
            PaymentError::ExceedsCaptured { .. } => "refund_exceeds_captured",
            PaymentError::NotNow(..) => "invalid_payment_operation",
            PaymentError::CapturedBeyondTotal { .. } => "captured_exceeds_total",
        }
    }
}

/// An order's money, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// The order's total: what there is to pay.
    pub total: i64,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub status: PaymentStatus,
}

impl Payment {
    /// A new order's payment: nothing authorised.
    pub fn unpaid(total: i64) -> Self {
        Payment {
            total,
            authorized: 0,
            captured: 0,
            refunded: 0,
            status: PaymentStatus::Unpaid,
        }
    }

    /// What is still to pay.
    pub fn outstanding(&self) -> i64 {
        self.total - self.captured
    }

    /// What a refund may still give back.
    pub fn refundable(&self) -> i64 {
        self.captured - self.refunded
    }

    /// The payment after `operation`, or why it cannot happen. The single source of truth
    /// for money on an order.
    pub fn apply(self, operation: Operation) -> Result<Payment, PaymentError> {
        use PaymentStatus::*;
        let held = self.authorized - self.captured;
        if matches!(
            operation,
            Operation::Authorize(amount) | Operation::Capture(amount) | Operation::Receive(amount)
                | Operation::Refund(amount) if amount <= 0
        ) {
            return Err(PaymentError::NotPositive);
        }
        let not_now = |verb| Err(PaymentError::NotNow(self.status, verb));
        let mut next = self;
        match operation {
            Operation::Authorize(amount) => {
                if !matches!(self.status, Unpaid | Failed) {
                    return not_now("authorised");
                }
                if amount > self.total {
                    return Err(PaymentError::ExceedsOutstanding {
                        amount,
                        outstanding: self.total,
                    });
                }
                next.authorized = amount;
            }
            Operation::Fail => {
                if !matches!(self.status, Unpaid | Failed) {
                    return not_now("declined");
                }
                next.status = Failed;
                return Ok(next);
            }
            Operation::Capture(amount) => {
                if amount > held {
                    return Err(PaymentError::ExceedsAuthorized {
                        amount,
                        capturable: held,
                    });
                }
                next.captured += amount;
            }
            Operation::Void => {
                if held == 0 {
                    return not_now("voided");
                }
                next.authorized = self.captured;
                if self.captured == 0 {
                    next.status = Voided;
                    return Ok(next);
                }
            }
            Operation::Receive(amount) => {
                // Money held by a provider is captured, not received again by hand.
                if held > 0 {
                    return not_now("received by hand");
                }
                if amount > self.outstanding() {
                    return Err(PaymentError::ExceedsOutstanding {
                        amount,
                        outstanding: self.outstanding(),
                    });
                }
                next.authorized += amount;
                next.captured += amount;
            }
            Operation::Refund(amount) => {
                if amount > self.refundable() {
                    return Err(PaymentError::ExceedsCaptured {
                        amount,
                        refundable: self.refundable(),
                    });
                }
                next.refunded += amount;
            }
        }
        next.status = next.settled_status();
        Ok(next)
    }

    /// The payment once the order's total is `by` less (units cancelled), and what of the
    /// authorisation that releases: whatever is held beyond the new total. Refused when more
    /// is captured than the new total (what was taken must be refunded first).
    pub fn reduce_total(self, by: i64) -> Result<(Payment, i64), PaymentError> {
        if by <= 0 {
            return Err(PaymentError::NotPositive);
        }
        let total = self.total - by;
        if self.captured > total || total < 0 {
            return Err(PaymentError::CapturedBeyondTotal {
                captured: self.captured,
                total,
            });
        }
        let authorized = self.authorized.min(total);
        let mut next = Payment {
            total,
            authorized,
            ..self
        };
        // Nothing held or taken: the status (unpaid, voided, failed) is not the amounts'.
        if authorized > 0 {
            next.status = next.settled_status();
        }
        Ok((next, self.authorized - authorized))
    }

    /// The status the amounts say, once an operation moved them.
    fn settled_status(&self) -> PaymentStatus {
        use PaymentStatus::*;
        if self.refunded > 0 {
            if self.refunded == self.captured {
                Refunded
            } else {
                PartiallyRefunded
            }
        } else if self.captured > 0 {
            if self.captured >= self.total {
                Paid
            } else {
                PartiallyPaid
            }
        } else if self.authorized > 0 {
            Authorized
        } else {
            Unpaid
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use PaymentStatus::*;

    const TOTAL: i64 = 10_000;

    /// One payment in every status, reached through the operations themselves.
    fn in_status(status: PaymentStatus) -> Payment {
        let unpaid = Payment::unpaid(TOTAL);
        let run = |ops: &[Operation]| {
            ops.iter()
                .try_fold(unpaid, |p, op| p.apply(*op))
                .expect("reachable")
        };
        use Operation::*;
        let payment = match status {
            Unpaid => unpaid,
            Authorized => run(&[Authorize(TOTAL)]),
            PartiallyPaid => run(&[Authorize(TOTAL), Capture(4_000)]),
            Paid => run(&[Authorize(TOTAL), Capture(TOTAL)]),
            PartiallyRefunded => run(&[Receive(TOTAL), Refund(2_500)]),
            Refunded => run(&[Receive(TOTAL), Refund(TOTAL)]),
            Voided => run(&[Authorize(TOTAL), Void]),
            Failed => run(&[Fail]),
        };
        assert_eq!(payment.status, status);
        payment
    }

    /// Every operation with a small and a too-large amount.
    fn operations(p: &Payment) -> Vec<Operation> {
        use Operation::*;
        let mut ops = vec![Fail, Void];
        for amount in [0, 1, p.total, p.total + 1] {
            ops.extend([
                Authorize(amount),
                Capture(amount),
                Receive(amount),
                Refund(amount),
            ]);
        }
        ops
    }

    fn assert_invariants(p: &Payment) {
        assert!(0 <= p.refunded, "{p:?}");
        assert!(p.refunded <= p.captured, "{p:?}");
        assert!(p.captured <= p.authorized, "{p:?}");
        assert!(p.authorized <= p.total, "{p:?}");
    }

    /// The table: which operations each status allows (with an amount that fits).
    fn allowed(status: PaymentStatus, op: Operation) -> bool {
        use Operation::*;
        let held = matches!(status, Authorized | PartiallyPaid);
        match op {
            Authorize(_) | Fail => matches!(status, Unpaid | Failed),
            Capture(_) | Void => held,
            Receive(_) => matches!(status, Unpaid | Failed | Voided),
            Refund(_) => matches!(status, PartiallyPaid | Paid | PartiallyRefunded),
        }
    }

    /// The amount `op` may carry at most from `p`.
    fn limit(p: &Payment, op: Operation) -> i64 {
        match op {
            Operation::Authorize(_) => p.total,
            Operation::Capture(_) => p.authorized - p.captured,
            Operation::Receive(_) => p.outstanding(),
            Operation::Refund(_) => p.refundable(),
            Operation::Fail | Operation::Void => 0,
        }
    }

    #[test]
    fn every_operation_from_every_status_matches_the_table_and_keeps_the_invariants() {
        for status in PaymentStatus::ALL {
            let before = in_status(status);
            for op in operations(&before) {
                let result = before.apply(op);
                let amount = op.amount();
                let fits = matches!(op, Operation::Fail | Operation::Void)
                    || (amount > 0 && amount <= limit(&before, op));
                assert_eq!(
                    result.is_ok(),
                    allowed(status, op) && fits,
                    "{status} {op:?}: {result:?}"
                );
                match result {
                    Ok(after) => assert_invariants(&after),
                    Err(PaymentError::NotPositive) => assert_eq!(amount, 0),
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn the_status_follows_the_amounts() {
        use Operation::*;
        let p = Payment::unpaid(TOTAL).apply(Authorize(TOTAL)).unwrap();
        let p = p.apply(Capture(6_000)).unwrap();
        assert_eq!((p.status, p.outstanding()), (PartiallyPaid, 4_000));
        let p = p.apply(Void).unwrap();
        assert_eq!((p.status, p.authorized), (PartiallyPaid, 6_000));
        let p = p.apply(Refund(6_000)).unwrap();
        assert_eq!((p.status, p.refundable()), (Refunded, 0));
    }

    #[test]
    fn a_smaller_total_releases_what_is_held_beyond_it_and_never_what_was_taken() {
        for status in PaymentStatus::ALL {
            let before = in_status(status);
            for by in [0, 1, 4_000, TOTAL] {
                let result = before.reduce_total(by);
                let fits = by > 0 && before.captured <= before.total - by;
                assert_eq!(result.is_ok(), fits, "{status} by {by}: {result:?}");
                if let Ok((after, released)) = result {
                    assert_invariants(&after);
                    assert_eq!(after.total, before.total - by);
                    assert_eq!(released, before.authorized - after.authorized);
                    assert_eq!(
                        (after.captured, after.refunded),
                        (before.captured, before.refunded)
                    );
                }
            }
        }
        let held = in_status(Authorized);
        let (after, released) = held.reduce_total(2_500).expect("fits");
        assert_eq!(
            (after.authorized, released, after.status),
            (7_500, 2_500, Authorized)
        );
        let partly = in_status(PartiallyPaid).reduce_total(6_000).expect("fits");
        assert_eq!(
            (partly.0.status, partly.1),
            (Paid, 6_000),
            "what was taken is all there is to pay"
        );
        let refused = in_status(Paid).reduce_total(1).unwrap_err();
        assert_eq!(refused.code(), "captured_exceeds_total");
    }

    #[test]
    fn refusals_name_the_limit_they_hit() {
        let paid = in_status(PartiallyRefunded);
        let refused = paid.apply(Operation::Refund(TOTAL)).unwrap_err();
        assert_eq!(refused.code(), "refund_exceeds_captured");
        assert_eq!(
            refused.to_string(),
            "10000 is more than the 7500 captured and not yet refunded"
        );
        let refused = in_status(Refunded).apply(Operation::Void).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "a payment that is refunded cannot be voided"
        );
    }

    #[test]
    fn two_hundred_random_operations_never_break_an_invariant() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = Payment::unpaid(rng.random_range(1..=TOTAL));
            for _ in 0..200 {
                let amount = rng.random_range(-10..=p.total + 10);
                let op = match rng.random_range(0..6) {
                    0 => Operation::Authorize(amount),
                    1 => Operation::Fail,
                    2 => Operation::Capture(amount),
                    3 => Operation::Void,
                    4 => Operation::Receive(amount),
                    _ => Operation::Refund(amount),
                };
                match p.apply(op) {
                    Ok(next) => {
                        assert_invariants(&next);
                        assert!(next.captured >= p.captured && next.refunded >= p.refunded);
                        p = next;
                    }
                    Err(_) => assert_invariants(&p),
                }
            }
        }
    }
}
