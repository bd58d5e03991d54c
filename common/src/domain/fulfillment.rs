//! Fulfilments as pure functions: which units of which lines a parcel may carry, and what
//! the order's status comes to as parcels ship and arrive.
//!
//! A line's units are each shipped or cancelled once: a parcel (or a cancellation) takes at
//! most what is left of a line (its quantity less what shipped and was cancelled, or, when
//! the api checks a request, less what earlier accepted requests claimed). An order ships in parcels while it is `processing` or
//! `partially_shipped`; it is `partially_shipped` until no unit is left, then `shipped`,
//! and `delivered` once every parcel is.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::OrderStatus;

/// Where a parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum FulfillmentStatus {
    /// Handed to the carrier.
    Shipped,
    /// The carrier delivered it.
    Delivered,
}

impl FulfillmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FulfillmentStatus::Shipped => "shipped",
            FulfillmentStatus::Delivered => "delivered",
        }
    }
}

/// One line of an order, as far as shipping goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineUnits {
    pub item_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    /// Units that shipped (or, for the api's check, were claimed by accepted requests).
    pub taken: i32,
}

impl LineUnits {
    /// Units still to ship.
    pub fn remaining(&self) -> i32 {
        self.quantity - self.taken
    }
}

/// Some units of one order line: in a parcel, or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineQuantity {
    /// The order line (`items[].id`).
    pub item_id: Uuid,
    #[schema(minimum = 1)]
    pub quantity: i32,
}

/// Why units cannot be shipped (or cancelled) as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    #[error("must name at least one line")]
    Empty,
    #[error("is not a line of this order")]
    UnknownLine,
    #[error("names a line already in this parcel")]
    Repeated,
    #[error("must be at least 1")]
    NotPositive,
    #[error("only {remaining} of {sku} remain to ship")]
    Exceeds { sku: String, remaining: i32 },
}

impl UnitsError {
    /// A short machine-readable reason, stored in the timeline.
    pub fn code(&self) -> &'static str {
        match self {
            UnitsError::Empty => "nothing_to_ship",
            UnitsError::UnknownLine => "unknown_line",
            UnitsError::Repeated => "repeated_line",
            UnitsError::NotPositive => "invalid_quantity",
            UnitsError::Exceeds { .. } => "exceeds_remaining",
        }
    }
}

/// Units refused, and the position in the request of the line it is refused for (`None`
/// for the request as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: Option<usize>,
    pub error: UnitsError,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "lines[{line}]: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// Checks that `parcel` can ship (or be cancelled) from `lines`: each of its lines is one
/// of the order's, named once, with between 1 and what remains of it.
pub fn check_units(lines: &[LineUnits], parcel: &[LineQuantity]) -> Result<(), Refusal> {
    if parcel.is_empty() {
        return Err(Refusal {
            line: None,
            error: UnitsError::Empty,
        });
    }
    for (i, asked) in parcel.iter().enumerate() {
        let refuse = |error| {
            Err(Refusal {
                line: Some(i),
                error,
            })
        };
        let Some(line) = lines.iter().find(|line| line.item_id == asked.item_id) else {
            return refuse(UnitsError::UnknownLine);
        };
        if parcel[..i].iter().any(|p| p.item_id == asked.item_id) {
            return refuse(UnitsError::Repeated);
        }
        if asked.quantity < 1 {
            return refuse(UnitsError::NotPositive);
        }
        if asked.quantity > line.remaining() {
            return refuse(UnitsError::Exceeds {
                sku: line.sku.clone(),
                remaining: line.remaining(),
            });
        }
    }
    Ok(())
}

/// The order's status once `lines` have shipped what they record: `shipped` when nothing
/// remains, `partially_shipped` otherwise.
pub fn status_after_shipping(lines: &[LineUnits]) -> OrderStatus {
    if lines.iter().all(|line| line.remaining() == 0) {
        OrderStatus::Shipped
    } else {
        OrderStatus::PartiallyShipped
    }
}

/// The order's status once `units` are taken from `lines` as well (shipped, or claimed by
/// an accepted request): what a parcel will make of the order, before it ships.
pub fn status_once_taken(lines: &[LineUnits], units: &[LineQuantity]) -> OrderStatus {
    let after: Vec<LineUnits> = lines
        .iter()
        .map(|line| {
            let asked: i32 = units
                .iter()
                .filter(|u| u.item_id == line.item_id)
                .map(|u| u.quantity)
                .sum();
            LineUnits {
                taken: line.taken + asked,
                ..line.clone()
            }
        })
        .collect();
    status_after_shipping(&after)
}

/// Whether an order that is `status`, with parcels in `parcels`, is now delivered: every
/// unit shipped and every parcel arrived.
pub fn delivered(status: OrderStatus, parcels: &[FulfillmentStatus]) -> bool {
    status == OrderStatus::Shipped
        && !parcels.is_empty()
        && parcels.iter().all(|p| *p == FulfillmentStatus::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: i32, taken: i32) -> LineUnits {
        LineUnits {
            item_id: Uuid::now_v7(),
            sku: "SKU-A".into(),
            quantity,
            taken,
        }
    }

    fn take(line: &LineUnits, quantity: i32) -> LineQuantity {
        LineQuantity {
            item_id: line.item_id,
            quantity,
        }
    }

    #[test]
    fn a_parcel_carries_between_one_unit_and_what_remains_of_each_line() {
        let lines = [line(3, 1), line(2, 0)];
        assert_eq!(check_units(&lines, &[take(&lines[0], 2)]), Ok(()));
        assert_eq!(
            check_units(&lines, &[take(&lines[0], 2), take(&lines[1], 2)]),
            Ok(())
        );
        let over = check_units(&lines, &[take(&lines[1], 1), take(&lines[0], 3)]).unwrap_err();
        assert_eq!(over.line, Some(1));
        assert_eq!(over.error.code(), "exceeds_remaining");
        assert_eq!(over.to_string(), "lines[1]: only 2 of SKU-A remain to ship");
        for quantity in [0, -1] {
            let refused = check_units(&lines, &[take(&lines[0], quantity)]).unwrap_err();
            assert_eq!(refused.error, UnitsError::NotPositive);
        }
    }

    #[test]
    fn empty_unknown_and_repeated_lines_are_refused() {
        let lines = [line(3, 0)];
        assert_eq!(
            check_units(&lines, &[]).unwrap_err().error,
            UnitsError::Empty
        );
        let stranger = line(1, 0);
        assert_eq!(
            check_units(&lines, &[take(&stranger, 1)]).unwrap_err(),
            Refusal {
                line: Some(0),
                error: UnitsError::UnknownLine
            }
        );
        let twice = check_units(&lines, &[take(&lines[0], 1), take(&lines[0], 1)]);
        assert_eq!(twice.unwrap_err().error, UnitsError::Repeated);
    }

    #[test]
    fn a_fully_shipped_line_takes_no_more() {
        let lines = [line(2, 2)];
        let refused = check_units(&lines, &[take(&lines[0], 1)]).unwrap_err();
        assert_eq!(
            refused.error,
            UnitsError::Exceeds {
                sku: "SKU-A".into(),
                remaining: 0
            }
        );
    }

    #[test]
    fn an_order_is_shipped_once_nothing_remains_and_delivered_once_every_parcel_arrived() {
        assert_eq!(
            status_after_shipping(&[line(3, 2), line(2, 2)]),
            OrderStatus::PartiallyShipped
        );
        assert_eq!(
            status_after_shipping(&[line(3, 3), line(2, 2)]),
            OrderStatus::Shipped
        );
        let lines = [line(3, 1), line(2, 2)];
        assert_eq!(
            status_once_taken(&lines, &[take(&lines[0], 1)]),
            OrderStatus::PartiallyShipped
        );
        assert_eq!(
            status_once_taken(&lines, &[take(&lines[0], 2)]),
            OrderStatus::Shipped
        );
        use FulfillmentStatus::*;
        use OrderStatus as S;
        assert!(delivered(S::Shipped, &[Delivered, Delivered]));
        assert!(!delivered(S::Shipped, &[Delivered, Shipped]));
        assert!(
            !delivered(S::PartiallyShipped, &[Delivered]),
            "units still on the shelf"
        );
        assert!(!delivered(S::Shipped, &[]));
    }
}
