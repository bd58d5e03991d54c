//! An order email as a MIME message: subject, plain-text and HTML bodies rendered from the
//! templates in `worker/templates/`, and a Message-ID made from the change's event id. A
//! receipt (money taken or given back) also lists the amounts as they were.

use common::{
    config::EmailSettings,
    domain::{OrderStatus, customer_text, money::Money},
};
use lettre::{
    Message,
    message::{Mailbox, MultiPart},
};
use minijinja::{Environment, context};
use serde::Serialize;
use uuid::Uuid;

/// An email due: the change as it was, and the order's name, lines and total.
#[derive(Debug, sqlx::FromRow)]
pub struct DueEmail {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub recipient: String,
    pub message: String,
    pub customer_name: String,
    pub tracking_number: Option<String>,
    pub currency: String,
    pub total_amount_minor: i64,
    /// For a receipt: `capture`, `receipt` or `refund`, and the amounts after it.
    pub payment_kind: Option<String>,
    pub payment_amount_minor: Option<i64>,
    pub amount_paid_minor: Option<i64>,
    pub amount_refunded_minor: Option<i64>,
}

#[derive(Serialize)]
struct ReceiptView {
    /// `Paid` or `Refunded`.
    label: &'static str,
    amount: String,
    paid: String,
    refunded: String,
}

impl DueEmail {
    fn receipt(&self) -> Option<ReceiptView> {
        let kind = self.payment_kind.as_deref()?;
        let money = |minor: Option<i64>| Money::from_minor(minor.unwrap_or(0)).to_string();
        Some(ReceiptView {
            label: if kind == "refund" { "Refunded" } else { "Paid" },
            amount: money(self.payment_amount_minor),
            paid: money(self.amount_paid_minor),
            refunded: money(self.amount_refunded_minor),
        })
    }

    fn headline(&self) -> String {
        match self.payment_kind.as_deref() {
            Some("refund") => "A refund is on its way to you".into(),
            Some(_) => "Payment received: your receipt".into(),
            None => headline(self.status),
        }
    }
}

/// One line of the order, as the email lists it.
#[derive(Debug, sqlx::FromRow)]
pub struct Line {
    pub product_name: String,
    pub quantity: i32,
    pub total_price_minor: i64,
}

#[derive(Serialize)]
struct LineView<'a> {
    name: &'a str,
    quantity: i32,
    total: String,
}

/// The parsed templates; HTML is escaped by the `.html` template's name.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.add_template(
            "order_update.txt",
            include_str!("../../templates/order_update.txt"),
        )?;
        env.add_template(
            "order_update.html",
            include_str!("../../templates/order_update.html"),
        )?;
        Ok(Self { env })
    }

    /// The email for `due`; an error means it can never be sent as it is (an address that
    /// does not parse), so the caller gives up on it.
    pub fn message(
        &self,
        settings: &EmailSettings,
        due: &DueEmail,
        lines: &[Line],
    ) -> Result<Message, String> {
        let reference = customer_text::order_reference(due.order_id);
        let headline = due.headline();
        let subject = format!("{headline} (order {reference})");
        let lines: Vec<LineView> = lines
            .iter()
            .map(|line| LineView {
                name: &line.product_name,
                quantity: line.quantity,
                total: Money::from_minor(line.total_price_minor).to_string(),
            })
            .collect();
        let view = context! {
            subject, headline, reference, lines,
            customer_name => due.customer_name,
            message => due.message,
            tracking_number => due.tracking_number,
            receipt => due.receipt(),
            currency => due.currency,
            total => Money::from_minor(due.total_amount_minor).to_string(),
            shop_name => settings.shop_name,
            support_email => settings.support_email,
        };
        let render = |name: &str| {
            self.env
                .get_template(name)
                .and_then(|template| template.render(&view))
                .map_err(|e| format!("template {name}: {e}"))
        };
        let (text, html) = (render("order_update.txt")?, render("order_update.html")?);
        let mailbox = |what: &str, address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|e| format!("{what} {address:?} is not an address: {e}"))
        };
        let from = mailbox("sender", &settings.from)?;
        Message::builder()
            .message_id(Some(format!("<{}@{}>", due.id, from.email.domain())))
            .from(from)
            .reply_to(mailbox("support address", &settings.support_email)?)
            .to(mailbox("recipient", &due.recipient)?)
            .subject(format!("{}: {subject}", settings.shop_name))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("building the message: {e}"))
    }
}

fn headline(status: OrderStatus) -> String {
    match status {
        OrderStatus::Confirmed => "Your order is confirmed".into(),
        OrderStatus::PartiallyShipped => "News of your parcels".into(),
        OrderStatus::Shipped => "Your order is on its way".into(),
        OrderStatus::Delivered => "Your order was delivered".into(),
        OrderStatus::Cancelled => "Your order was cancelled".into(),
        OrderStatus::Refunded => "Your order was refunded".into(),
        other => format!("Your order is now {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EmailSettings {
        common::config::Settings::from_lookup(|_| None)
            .expect("defaults")
            .email
    }

    fn shipped_to(recipient: &str) -> DueEmail {
        DueEmail {
            id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            status: OrderStatus::Shipped,
            recipient: recipient.into(),
            message: "It is on its way.".into(),
            customer_name: "Ada <script>".into(),
            tracking_number: Some("TRK-42".into()),
            currency: "USD".into(),
            total_amount_minor: 2500,
            payment_kind: None,
            payment_amount_minor: None,
            amount_paid_minor: None,
            amount_refunded_minor: None,
        }
    }

    #[test]
    fn a_receipt_lists_what_was_taken_and_given_back() {
        let mut due = shipped_to("ada@example.com");
        due.payment_kind = Some("refund".into());
        due.payment_amount_minor = Some(1000);
        due.amount_paid_minor = Some(2500);
        due.amount_refunded_minor = Some(1000);
        let message = Templates::new()
            .expect("templates")
            .message(&settings(), &due, &[])
            .expect("message");
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(raw.contains("A refund is on its way to you"), "{raw}");
        for line in [
            "Refunded now: 10.00 USD",
            "Paid in all: 25.00 USD",
            "Refunded in all: 10.00 USD",
        ] {
            assert!(raw.contains(line), "{line}: {raw}");
        }
    }

    #[test]
    fn a_shipped_email_has_both_bodies_the_tracking_number_and_its_event_id() {
        let due = shipped_to("ada@example.com");
        let line = Line {
            product_name: "Lamp".into(),
            quantity: 2,
            total_price_minor: 2500,
        };
        let message = Templates::new()
            .expect("templates")
            .message(&settings(), &due, &[line])
            .expect("message");
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(
            raw.contains(&format!("Message-ID: <{}@localhost>", due.id)),
            "{raw}"
        );
        assert!(raw.contains("To: ada@example.com"), "{raw}");
        assert!(
            raw.contains("Subject: Orderflow: Your order is on its way"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains("TRK-42"), "{raw}");
        assert!(raw.contains("25.00 USD"), "{raw}");
        assert!(raw.contains("Ada &lt;script&gt;"), "HTML is escaped: {raw}");
    }

    #[test]
    fn a_recipient_that_is_no_address_is_refused() {
        let refused = Templates::new().expect("templates").message(
            &settings(),
            &shipped_to("not an address"),
            &[],
        );
        assert!(refused.is_err());
    }
}
