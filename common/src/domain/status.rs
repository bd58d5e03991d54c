//! The order lifecycle as a pure function: which transitions exist and who may ask for them.
//!
//! ```text
//! pending ─system─▶ confirmed ─staff─▶ processing ─staff─▶ shipped ─staff─▶ delivered ─system─▶ refunded
//!    │  └─system (stock reserved, a provider must authorise)─▶ awaiting_payment ─system (authorised)─▶ confirmed
//!    ├─system (out of stock; unpaid in time; payment declined)─▶ cancelled
//!    └─ cancel: customer while pending/awaiting_payment/confirmed; staff up to processing ─▶ cancelled
//!
//! processing ─staff (a parcel with some units)─▶ partially_shipped ─staff (the last units)─▶ shipped
//! ```
//!
//! A delivered order becomes `refunded` when refunds give back everything captured for it
//! (see `payment`), never by a word staff set. `partially_shipped` is reached by shipping
//! parcels (see `fulfillment`), never by a word staff set either.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ActorKind, Role};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "order_status", rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    /// Stock is reserved; the customer's payment is not authorised yet.
    #[serde(rename = "awaiting_payment")]
    #[sqlx(rename = "awaiting_payment")]
    AwaitingPayment,
    Confirmed,
    Processing,
    /// Some units have shipped, others still wait to be.
    #[serde(rename = "partially_shipped")]
    #[sqlx(rename = "partially_shipped")]
    PartiallyShipped,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
}

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the order is already {0}")]
    Unchanged(OrderStatus),
    #[error("the order is {0}, which is final")]
    Terminal(OrderStatus),
    #[error("an order cannot go from {from} to {to}")]
    Impossible { from: OrderStatus, to: OrderStatus },
    #[error("a {role} may not move an order from {from} to {to}")]
    NotPermitted {
        role: &'static str,
        from: OrderStatus,
        to: OrderStatus,
    },
}

impl TransitionError {
    /// A short machine-readable reason, stored in the timeline.
    pub fn code(self) -> &'static str {
        match self {
            TransitionError::Unchanged(_) => "unchanged",
            TransitionError::Terminal(_) => "terminal",
            TransitionError::Impossible { .. } => "invalid_transition",
            TransitionError::NotPermitted { .. } => "not_permitted",
        }
    }
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 9] = [
        OrderStatus::Pending,
        OrderStatus::AwaitingPayment,
        OrderStatus::Confirmed,
        OrderStatus::Processing,
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Processing => "processing",
            OrderStatus::PartiallyShipped => "partially_shipped",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Cancelled | OrderStatus::Refunded)
    }

    /// Stock stays reserved from confirmation (or from the wait for payment) until the goods
    /// leave the warehouse (of a partly shipped order, the units still on the shelf).
    pub fn holds_reserved_stock(self) -> bool {
        matches!(
            self,
            OrderStatus::AwaitingPayment
                | OrderStatus::Confirmed
                | OrderStatus::Processing
                | OrderStatus::PartiallyShipped
        )
    }

    /// Whether `by` may cancel some units of the order now: staff until the last unit ships,
    /// the customer while nothing is being prepared yet.
    pub fn cancels_units(self, by: ActorKind) -> bool {
        use OrderStatus::*;
        match by {
            ActorKind::User(Role::Vendor | Role::Admin) => {
                matches!(self, Confirmed | Processing | PartiallyShipped)
            }
            ActorKind::User(Role::Customer) => self == Confirmed,
            ActorKind::System => false,
        }
    }

    /// Parcels may ship: the order is being prepared, or some of it has shipped already.
    pub fn ships_parcels(self) -> bool {
        matches!(
            self,
            OrderStatus::Processing | OrderStatus::PartiallyShipped
        )
    }

    /// Moving to this status needs a tracking number.
    pub fn requires_tracking_number(self) -> bool {
        self == OrderStatus::Shipped
    }

    /// Checks `self → to` asked by `by`. The single source of truth for the lifecycle.
    pub fn transition(self, to: OrderStatus, by: ActorKind) -> Result<(), TransitionError> {
        use OrderStatus::*;
        if self == to {
            return Err(TransitionError::Unchanged(self));
        }
        if self.is_terminal() {
            return Err(TransitionError::Terminal(self));
        }
        let exists = matches!(
            (self, to),
            (Pending, Confirmed | AwaitingPayment)
                | (AwaitingPayment, Confirmed)
                | (Confirmed, Processing)
                | (Processing, Shipped | PartiallyShipped)
                | (PartiallyShipped, Shipped)
                | (Shipped, Delivered)
                | (Delivered, Refunded)
                | (
                    Pending | AwaitingPayment | Confirmed | Processing,
                    Cancelled
                )
        );
        if !exists {
            return Err(TransitionError::Impossible { from: self, to });
        }
        let permitted = match by {
            ActorKind::System => matches!(
                (self, to),
                (Pending, Confirmed | AwaitingPayment | Cancelled)
                    | (AwaitingPayment, Confirmed | Cancelled)
                    | (Delivered, Refunded)
            ),
            ActorKind::User(Role::Customer) => {
                matches!(
                    (self, to),
                    (Pending | AwaitingPayment | Confirmed, Cancelled)
                )
            }
            ActorKind::User(Role::Vendor | Role::Admin) => {
                !matches!(to, AwaitingPayment | Confirmed | Refunded)
            }
        };
        if permitted {
            Ok(())
        } else {
            Err(TransitionError::NotPermitted {
                role: by.as_str(),
                from: self,
                to,
            })
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    const ALL: [OrderStatus; 9] = OrderStatus::ALL;
    const CUSTOMER: ActorKind = ActorKind::User(Role::Customer);
    const VENDOR: ActorKind = ActorKind::User(Role::Vendor);
    const ADMIN: ActorKind = ActorKind::User(Role::Admin);
    const SYSTEM: ActorKind = ActorKind::System;

    /// The complete table of allowed (from, to, initiator) triples.
    fn allowed(from: OrderStatus, to: OrderStatus, by: ActorKind) -> bool {
        let staff = by == VENDOR || by == ADMIN;
        match (from, to) {
            (Pending, Confirmed | AwaitingPayment) | (AwaitingPayment, Confirmed) => by == SYSTEM,
            (Pending | AwaitingPayment, Cancelled) => true,
            (Confirmed, Cancelled) => by == CUSTOMER || staff,
            (Processing, Cancelled) => staff,
            (Delivered, Refunded) => by == SYSTEM,
            (Confirmed, Processing)
            | (Processing, Shipped | PartiallyShipped)
            | (PartiallyShipped, Shipped)
            | (Shipped, Delivered) => staff,
            _ => false,
        }
    }

    #[test]
    fn every_status_pair_for_every_initiator_matches_the_lifecycle_table() {
        for from in ALL {
            for to in ALL {
                for by in [SYSTEM, CUSTOMER, VENDOR, ADMIN] {
                    assert_eq!(
                        from.transition(to, by).is_ok(),
                        allowed(from, to, by),
                        "{from} -> {to} by {by:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn terminal_statuses_refuse_everything() {
        for to in ALL {
            assert!(Cancelled.transition(to, ADMIN).is_err());
            assert!(Refunded.transition(to, ADMIN).is_err());
        }
        assert_eq!(
            Cancelled.transition(Confirmed, SYSTEM),
            Err(TransitionError::Terminal(Cancelled))
        );
    }

    #[test]
    fn refusals_explain_themselves() {
        assert_eq!(
            Shipped.transition(Shipped, VENDOR),
            Err(TransitionError::Unchanged(Shipped))
        );
        assert_eq!(
            Delivered.transition(Processing, VENDOR),
            Err(TransitionError::Impossible {
                from: Delivered,
                to: Processing
            })
        );
        let refused = Processing.transition(Cancelled, CUSTOMER).unwrap_err();
        assert_eq!(refused.code(), "not_permitted");
        assert_eq!(
            refused.to_string(),
            "a customer may not move an order from processing to cancelled"
        );
    }

    #[test]
    fn a_partly_shipped_order_keeps_what_is_left_reserved_and_cannot_be_cancelled_whole() {
        assert!(PartiallyShipped.holds_reserved_stock());
        assert!(!Shipped.holds_reserved_stock());
        assert!(matches!(
            PartiallyShipped.transition(Cancelled, ADMIN),
            Err(TransitionError::Impossible { .. })
        ));
        let parcels: Vec<OrderStatus> = ALL.into_iter().filter(|s| s.ships_parcels()).collect();
        assert_eq!(parcels, [Processing, PartiallyShipped]);
    }

    #[test]
    fn staff_cancel_units_until_the_last_ships_and_customers_before_preparation() {
        for status in ALL {
            let staff = matches!(status, Confirmed | Processing | PartiallyShipped);
            assert_eq!(status.cancels_units(VENDOR), staff, "{status}");
            assert_eq!(status.cancels_units(ADMIN), staff, "{status}");
            assert_eq!(
                status.cancels_units(CUSTOMER),
                status == Confirmed,
                "{status}"
            );
            assert!(!status.cancels_units(SYSTEM));
        }
    }

    #[test]
    fn only_shipping_needs_a_tracking_number() {
        for status in ALL {
            assert_eq!(status.requires_tracking_number(), status == Shipped);
        }
    }
}
