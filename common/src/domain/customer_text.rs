//! What a customer is told about their order. Timeline reasons are written for staff (free
//! text notes, `out_of_stock: SKU-1, SKU-2`); customers get these sentences instead, in
//! the timeline and in notifications alike.

use super::{FulfillmentStatus, Money, OrderStatus, payment::Operation};

/// The customer-facing sentence for an order reaching `to`, given the staff-side `reason`
/// and the role of whoever caused it (`customer`, `vendor`, `admin`, `system`).
pub fn status_sentence(to: OrderStatus, reason: Option<&str>, actor_role: &str) -> &'static str {
    match to {
        OrderStatus::Pending => "Order placed.",
        OrderStatus::AwaitingPayment => {
            "Your items are reserved: complete your payment to confirm the order."
        }
        OrderStatus::Confirmed => "Order confirmed: your items are reserved.",
        OrderStatus::Processing => "Your order is being prepared.",
        OrderStatus::PartiallyShipped => "Part of your order has shipped; the rest will follow.",
        OrderStatus::Shipped => "Your order has shipped.",
        OrderStatus::Delivered => "Your order was delivered.",
        OrderStatus::Refunded => "Your order was refunded.",
        OrderStatus::Cancelled => cancellation_sentence(reason, actor_role),
    }
}

fn cancellation_sentence(reason: Option<&str>, actor_role: &str) -> &'static str {
    if reason.is_some_and(|reason| reason.starts_with("out_of_stock")) {
        "Order cancelled: some items were out of stock. You have not been charged."
    } else if reason.is_some_and(|reason| reason.starts_with("payment_timeout")) {
        "Order cancelled: no payment arrived in time. You have not been charged."
    } else if reason.is_some_and(|reason| reason.starts_with("payment_failed")) {
        "Order cancelled: your payment was declined. You have not been charged."
    } else if actor_role == "customer" {
        "Order cancelled at your request."
    } else {
        "Order cancelled by the store."
    }
}

/// The customer-facing sentence for an operation on their order's money.
pub fn payment_sentence(operation: Operation, currency: &str) -> String {
    let amount = Money::from_minor(operation.amount());
    match operation {
        Operation::Authorize(_) => format!("Payment of {amount} {currency} authorised."),
        Operation::Fail => "Your payment was declined.".to_owned(),
        Operation::Capture(_) | Operation::Receive(_) => {
            format!("Payment of {amount} {currency} received. Thank you.")
        }
        Operation::Void => "The hold on your payment was released.".to_owned(),
        Operation::Refund(_) => format!("{amount} {currency} refunded to you."),
    }
}

/// The customer-facing sentence for a parcel of `units` items that shipped with
/// `tracking_number`, or arrived.
pub fn parcel_sentence(status: FulfillmentStatus, units: i32, tracking_number: &str) -> String {
    let items = if units == 1 { "item" } else { "items" };
    match status {
        FulfillmentStatus::Shipped => {
            format!(
                "A parcel with {units} {items} has shipped (tracking number {tracking_number})."
            )
        }
        FulfillmentStatus::Delivered => {
            format!("Your parcel {tracking_number} with {units} {items} was delivered.")
        }
    }
}

/// The customer-facing sentence for `units` items cancelled from their order, which now
/// comes to `total` in `currency`.
pub fn units_cancelled_sentence(units: i32, total: Money, currency: &str) -> String {
    let items = if units == 1 {
        "1 item was"
    } else {
        "items were"
    };
    let count = if units == 1 {
        String::new()
    } else {
        format!("{units} ")
    };
    format!("{count}{items} cancelled from your order; it now comes to {total} {currency}.")
}

/// Who acted, as a customer may know it: staff members stay anonymous.
pub fn actor_label(actor_role: &str) -> &'static str {
    match actor_role {
        "customer" => "customer",
        "system" => "system",
        _ => "store",
    }
}

/// How an order is named to its customer: the last 8 hex digits of its id.
pub fn order_reference(order_id: uuid::Uuid) -> String {
    let simple = order_id.simple().to_string();
    simple[simple.len() - 8..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_shortages_and_staff_notes_never_reach_the_customer() {
        let text = status_sentence(
            OrderStatus::Cancelled,
            Some("out_of_stock: SKU-SECRET-1"),
            "system",
        );
        assert!(!text.contains("SKU"), "{text}");
        assert!(text.contains("out of stock"));
        let staff = status_sentence(OrderStatus::Cancelled, Some("fraud suspected"), "vendor");
        assert_eq!(staff, "Order cancelled by the store.");
        let own = status_sentence(OrderStatus::Cancelled, Some("changed my mind"), "customer");
        assert_eq!(own, "Order cancelled at your request.");
    }

    #[test]
    fn every_status_has_a_sentence_and_staff_roles_read_as_the_store() {
        for status in OrderStatus::ALL {
            assert!(!status_sentence(status, None, "system").is_empty());
        }
        assert_eq!(actor_label("vendor"), "store");
        assert_eq!(actor_label("admin"), "store");
        assert_eq!(actor_label("customer"), "customer");
    }
}
