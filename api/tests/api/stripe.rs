//! Stripe as the payment provider, against localstripe (a stateful Stripe API server from
//! PyPI, in the test virtualenv `scripts/test.sh` makes): PaymentIntents created when stock
//! is reserved, authorised by the customer's card, captured on shipping, refunded, declined,
//! and Stripe's webhooks verified and applied once.
//!
//! localstripe sends `payment_intent.payment_failed` and `payment_intent.succeeded` itself
//! (signed as Stripe signs them, to the URL `POST /_config/webhooks/{id}` registers), but
//! not `payment_intent.amount_capturable_updated`: the tests send that one, signed with the
//! endpoint's secret, carrying the PaymentIntent as localstripe holds it.

use std::time::Duration;

use common::domain::{Money, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::{
    helpers::{TestApp, TestUser, test_settings, wait_until},
    mail::free_port,
};

pub const SECRET_KEY: &str = "sk_test_orderflow";
pub const WEBHOOK_SECRET: &str = "whsec_orderflow_test";
pub const GOOD_CARD: &str = "4242424242424242";
/// Stripe's test card that attaches and is declined when charged (4000 0000 0000 0002 is
/// declined at once, before a PaymentIntent could be confirmed with it, in localstripe).
const DECLINED_CARD: &str = "4000000000000341";

/// A localstripe process on a port of its own, stopped on drop.
pub struct Localstripe {
    pub url: String,
    client: reqwest::Client,
    _process: Child,
}

impl Localstripe {
    pub async fn start() -> Self {
        worker::webhooks::install_tls_provider();
        let python = std::env::var("SMTP_TEST_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/../target/test-venv/bin/python",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        let port = free_port();
        let process = Command::new(&python)
            .args([
                "-m",
                "localstripe",
                "--port",
                &port.to_string(),
                "--from-scratch",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} -m localstripe ({e}); scripts/test.sh installs it")
            });
        let stripe = Localstripe {
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _process: process,
        };
        wait_until("localstripe answers", Duration::from_secs(20), || async {
            stripe
                .client
                .get(format!("{}/v1/payment_intents", stripe.url))
                .basic_auth(SECRET_KEY, None::<&str>)
                .send()
                .await
                .is_ok()
        })
        .await;
        stripe
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.url))
            .basic_auth(SECRET_KEY, None::<&str>)
            .form(form)
            .send()
            .await
            .expect("localstripe answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// What Stripe refunded of the PaymentIntent's charge, in cents.
    pub async fn refunded(&self, intent: &str) -> i64 {
        let charge =
            self.get(&format!("/v1/payment_intents/{intent}")).await["latest_charge"].clone();
        let charge = charge["id"]
            .as_str()
            .or(charge.as_str())
            .expect("a charge")
            .to_owned();
        let refunds = self.get(&format!("/v1/refunds?charge={charge}")).await;
        refunds["data"]
            .as_array()
            .expect("refunds")
            .iter()
            .map(|r| r["amount"].as_i64().unwrap_or(0))
            .sum()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, &[]).await.1
    }

    /// Has localstripe sign its events for the api's webhook endpoint.
    async fn send_webhooks_to(&self, app: &TestApp) {
        let url = format!("{}/api/payments/stripe/webhook", app.address);
        let (status, _) = self
            .call(
                reqwest::Method::POST,
                "/_config/webhooks/orderflow",
                &[("url", &url), ("secret", WEBHOOK_SECRET)],
            )
            .await;
        assert!(status.is_success(), "{status}");
    }

    /// What the customer's front end does with the client secret: attach a card to the
    /// PaymentIntent and confirm it.
    pub async fn pay(&self, client_secret: &str, card: &str) -> (StatusCode, Value) {
        let intent = client_secret
            .split("_secret_")
            .next()
            .expect("a client secret");
        let (_, method) = self
            .call(
                reqwest::Method::POST,
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", card),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        let method = method["id"].as_str().expect("a payment method");
        let path = format!("/v1/payment_intents/{intent}");
        let (status, _) = self
            .call(reqwest::Method::POST, &path, &[("payment_method", method)])
            .await;
        assert!(status.is_success(), "{status}");
        self.call(reqwest::Method::POST, &format!("{path}/confirm"), &[])
            .await
    }
}

impl Localstripe {
    /// The settings that make `stripe` the payment provider.
    pub fn settings<'a>(&'a self, timeout: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("PAYMENT_PROVIDER", "stripe"),
            ("STRIPE_SECRET_KEY", SECRET_KEY),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("STRIPE_API_BASE", &self.url),
            ("PAYMENT_TIMEOUT", timeout),
        ]
    }
}

/// The api and one worker with Stripe as the provider, talking to `stripe`.
async fn shop(pool: PgPool, stripe: &Localstripe, timeout: &str) -> TestApp {
    let app = TestApp::start(pool, test_settings(&stripe.settings(timeout)), true).await;
    app.start_workers(1);
    app
}

/// Posts `event` to the webhook endpoint, signed with `secret`.
pub async fn deliver(app: &TestApp, event: &Value, secret: &str) -> reqwest::Response {
    let body = event.to_string();
    let signature = common::stripe::sign(secret, chrono::Utc::now().timestamp(), body.as_bytes());
    app.client
        .post(format!("{}/api/payments/stripe/webhook", app.address))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .expect("webhook sent")
}

/// The event Stripe sends once a manual-capture PaymentIntent is authorised.
pub fn authorised_event(id: &str, intent: &Value) -> Value {
    json!({
        "id": id, "object": "event", "type": "payment_intent.amount_capturable_updated",
        "data": { "object": intent }
    })
}

/// Reads with `read` until `done` holds, for at most 20 s; returns the last read.
async fn read_until<F, Fut>(what: &str, mut read: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The order as its customer reads it, once its PaymentIntent exists.
pub async fn awaiting_payment(app: &TestApp, customer: &TestUser, order: &str) -> Value {
    app.wait_for_status(&customer.token, order, "awaiting_payment")
        .await;
    let path = format!("/api/orders/{order}");
    let read = || async {
        app.get(&path, &customer.token)
            .await
            .json()
            .await
            .expect("order")
    };
    read_until("the PaymentIntent exists", read, |order| {
        order["payment"]["client_secret"].is_string()
    })
    .await
}

/// Pays for `order` (read while it awaits payment) with a good card and reports the
/// authorisation as Stripe's event `event_id`; waits until the order is confirmed. Returns
/// the PaymentIntent's id.
async fn pay_and_authorise(
    app: &TestApp,
    stripe: &Localstripe,
    customer: &TestUser,
    read: &Value,
    event_id: &str,
) -> String {
    let secret = read["payment"]["client_secret"].as_str().expect("secret");
    let intent_id = secret.split("_secret_").next().expect("id").to_owned();
    stripe.pay(secret, GOOD_CARD).await;
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    deliver(app, &authorised_event(event_id, &intent), WEBHOOK_SECRET).await;
    let order = read["id"].as_str().expect("id");
    app.wait_for_status(&customer.token, order, "confirmed")
        .await;
    intent_id
}

/// The order's timeline as `user` reads it, as text.
async fn timeline_of(app: &TestApp, user: &TestUser, order: &str) -> String {
    let path = format!("/api/orders/{order}/events");
    let timeline: Value = app
        .get(&path, &user.token)
        .await
        .json()
        .await
        .expect("timeline");
    timeline.to_string()
}

/// Has `staff` move the order through processing to shipped.
async fn ship(app: &TestApp, staff: &TestUser, order: &str) {
    app.move_order(staff, order, json!({ "status": "processing" }))
        .await;
    let shipped = json!({ "status": "shipped", "tracking_number": "TRACK-1" });
    app.move_order(staff, order, shipped).await;
}

pub async fn payment_of(app: &TestApp, staff: &TestUser, order: &str) -> Value {
    let path = format!("/api/orders/{order}/payments");
    app.get(&path, &staff.token)
        .await
        .json()
        .await
        .expect("ledger")
}

pub async fn wait_for_payment(app: &TestApp, staff: &TestUser, order: &str, status: &str) -> Value {
    let read = || payment_of(app, staff, order);
    read_until(&format!("the payment is {status}"), read, |ledger| {
        ledger["payment"]["status"] == status
    })
    .await
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_card_payment_is_authorised_captured_on_shipping_and_refunded_in_two_parts(pool: PgPool) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "30m").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let admin = app.user(Role::Admin, "admin").await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order_id(&alice, "MUG-1", 2).await;

    let read = awaiting_payment(&app, &alice, &order).await;
    assert_eq!(
        app.stock_of("MUG-1").await,
        (3, 2),
        "stock reserved while awaiting payment"
    );
    assert_eq!(read["payment"]["provider"], "stripe");
    assert!(read["payment"]["due_at"].is_string());
    let secret = read["payment"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let intent_id = secret.split("_secret_").next().expect("id").to_owned();
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["amount"], 5000, "the server-side total, in cents");
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["metadata"]["order_id"], order.as_str());
    let staff_read: Value = app
        .get(&format!("/api/orders/{order}"), &vendor.token)
        .await
        .json()
        .await
        .expect("order");
    assert!(
        staff_read["payment"]["client_secret"].is_null(),
        "only the customer gets it"
    );

    let (status, _) = stripe.pay(&secret, GOOD_CARD).await;
    assert!(status.is_success(), "{status}");
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["status"], "requires_capture");
    // A forged event changes nothing; the real one, delivered three times, applies once.
    let event = authorised_event("evt_authorised_1", &intent);
    let forged = deliver(&app, &event, "whsec_someone_else").await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert_eq!(forged.headers()["content-type"], "application/problem+json");
    for attempt in 0..3 {
        let answer = deliver(&app, &event, WEBHOOK_SECRET).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let answer: Value = answer.json().await.expect("answer");
        assert_eq!(answer["duplicate"], attempt > 0, "{answer}");
        assert_eq!(answer["order_id"], order.as_str());
    }
    app.wait_for_status(&alice.token, &order, "confirmed").await;
    let ledger = wait_for_payment(&app, &admin, &order, "authorized").await;
    assert_eq!(ledger["payment"]["amount_authorized"], "50.00");

    ship(&app, &vendor, &order).await;
    let ledger = wait_for_payment(&app, &admin, &order, "paid").await;
    assert_eq!(ledger["payment"]["amount_captured"], "50.00");
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["status"], "succeeded", "captured at Stripe");

    for (amount, status) in [("20.00", "partially_refunded"), ("30.00", "refunded")] {
        let response = app
            .post(
                &format!("/api/orders/{order}/refunds"),
                Some(&admin.token),
                json!({ "amount": amount, "reason": "returned" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let ledger = wait_for_payment(&app, &admin, &order, status).await;
        // Stripe's own objects agree with the ledger at each step.
        let refunded = Money::parse(
            ledger["payment"]["amount_refunded"]
                .as_str()
                .expect("amount"),
        )
        .expect("money")
        .minor();
        assert_eq!(stripe.refunded(&intent_id).await, refunded);
    }
    let too_much = app
        .post(
            &format!("/api/orders/{order}/refunds"),
            Some(&admin.token),
            json!({ "amount": "0.01" }),
        )
        .await;
    assert_eq!(too_much.status(), StatusCode::CONFLICT);

    let ledger = payment_of(&app, &admin, &order).await;
    let entries: Vec<(String, String)> = ledger["transactions"]
        .as_array()
        .expect("ledger")
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap_or_default().to_owned(),
                t["amount"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("authorization", "50.00"),
        ("capture", "50.00"),
        ("refund", "20.00"),
        ("refund", "30.00"),
    ]
    .map(|(kind, amount)| (kind.to_owned(), amount.to_owned()));
    assert_eq!(entries, expected);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_declined_card_cancels_the_order_and_releases_its_stock(pool: PgPool) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "30m").await;
    stripe.send_webhooks_to(&app).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order_id(&alice, "MUG-1", 2).await;
    let read = awaiting_payment(&app, &alice, &order).await;
    let secret = read["payment"]["client_secret"].as_str().expect("secret");

    let (status, _) = stripe.pay(secret, DECLINED_CARD).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    // localstripe signs and sends `payment_intent.payment_failed` itself.
    let cancelled = app.wait_for_status(&alice.token, &order, "cancelled").await;
    assert_eq!(cancelled["payment"]["status"], "failed");
    assert_eq!(app.stock_of("MUG-1").await, (5, 0), "stock released");
    let timeline = timeline_of(&app, &alice, &order).await;
    assert!(timeline.contains("your payment was declined"), "{timeline}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_event_for_a_payment_intent_of_no_order_moves_nothing(pool: PgPool) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "30m").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order_id(&alice, "MUG-1", 1).await;
    awaiting_payment(&app, &alice, &order).await;
    // Someone else's PaymentIntent, authorised, its metadata naming this order.
    let (_, other) = stripe
        .call(
            reqwest::Method::POST,
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "usd"),
                ("capture_method", "manual"),
                ("metadata[order_id]", &order),
            ],
        )
        .await;
    let secret = other["client_secret"].as_str().expect("secret");
    stripe.pay(secret, GOOD_CARD).await;
    let intent = stripe
        .get(&format!(
            "/v1/payment_intents/{}",
            other["id"].as_str().expect("id")
        ))
        .await;
    let answer = deliver(
        &app,
        &authorised_event("evt_other_1", &intent),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("answer");
    assert!(answer["order_id"].is_null(), "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read: Value = app
        .get(&format!("/api/orders/{order}"), &alice.token)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(read["status"], "awaiting_payment");
    assert_eq!(read["payment"]["status"], "unpaid");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_order_not_paid_in_time_is_cancelled_once_and_its_stock_returns(pool: PgPool) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "1s").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order_id(&alice, "MUG-1", 2).await;
    let read = awaiting_payment(&app, &alice, &order).await;
    let intent = read["payment"]["client_secret"]
        .as_str()
        .and_then(|s| s.split("_secret_").next())
        .expect("a PaymentIntent")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Two watchdogs at the same moment: one expiry between them.
    let (first, second) = tokio::join!(
        worker::payments::expire_unpaid(&app.pool),
        worker::payments::expire_unpaid(&app.pool)
    );
    assert_eq!(first.expect("first") + second.expect("second"), 1);
    let cancelled = app.wait_for_status(&alice.token, &order, "cancelled").await;
    assert_eq!(cancelled["payment"]["amount_due"], "0.00");
    assert_eq!(app.stock_of("MUG-1").await, (5, 0), "stock released");
    assert_eq!(
        worker::payments::expire_unpaid(&app.pool)
            .await
            .expect("again"),
        0
    );
    let timeline = timeline_of(&app, &alice, &order).await;
    assert!(
        timeline.contains("no payment arrived in time"),
        "{timeline}"
    );
    let path = format!("/v1/payment_intents/{intent}");
    read_until(
        "the PaymentIntent is cancelled",
        || stripe.get(&path),
        |pi| pi["status"] == "canceled",
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn staff_capture_before_shipping_and_shipping_then_captures_nothing_more(pool: PgPool) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "30m").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order_id(&alice, "MUG-1", 1).await;
    let capture = format!("/api/orders/{order}/capture");
    let read = awaiting_payment(&app, &alice, &order).await;
    let early = app.post(&capture, Some(&vendor.token), json!({})).await;
    assert_eq!(early.status(), StatusCode::CONFLICT, "nothing is held yet");
    let intent_id = pay_and_authorise(&app, &stripe, &alice, &read, "evt_authorised_1").await;

    let customer_try = app.post(&capture, Some(&alice.token), json!({})).await;
    assert_eq!(customer_try.status(), StatusCode::FORBIDDEN);
    let accepted = app.post(&capture, Some(&vendor.token), json!({})).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    wait_for_payment(&app, &vendor, &order, "paid").await;
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["status"], "succeeded");

    ship(&app, &vendor, &order).await;
    let again = app.post(&capture, Some(&vendor.token), json!({})).await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "everything is captured"
    );
    let captures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_calls WHERE kind = 'capture'")
            .fetch_one(&app.pool)
            .await
            .expect("calls");
    assert_eq!(captures, 1, "shipping found nothing left to capture");
    let ledger = payment_of(&app, &vendor, &order).await;
    assert_eq!(ledger["payment"]["amount_captured"], "25.00");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn cancelling_units_of_a_card_order_releases_their_share_and_shipping_captures_the_rest(
    pool: PgPool,
) {
    let stripe = Localstripe::start().await;
    let app = shop(pool, &stripe, "30m").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "25.00", 5).await;
    let order = app.order(&alice, "MUG-1", 2).await;
    let (id, item) = (
        order["id"].as_str().expect("id").to_owned(),
        order["items"][0]["id"].clone(),
    );
    let read = awaiting_payment(&app, &alice, &id).await;
    let intent_id = pay_and_authorise(&app, &stripe, &alice, &read, "evt_authorised_2").await;

    let path = format!("/api/orders/{id}/cancellations");
    let body = json!({ "lines": [{ "item_id": item, "quantity": 1 }], "reason": "one is enough" });
    let response = app.post(&path, Some(&alice.token), body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let read = || payment_of(&app, &vendor, &id);
    let ledger = read_until("the authorisation shrank", read, |ledger| {
        ledger["payment"]["amount_authorized"] == "25.00"
    })
    .await;
    let kinds: Vec<&str> = ledger["transactions"]
        .as_array()
        .expect("ledger")
        .iter()
        .map(|t| t["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["authorization", "release"]);
    assert_eq!(
        app.stock_of("MUG-1").await,
        (4, 1),
        "the cancelled mug is on sale again"
    );

    // Shipping captures the new total only. (localstripe models a partial capture as a full
    // one refunded in part and reports no `amount_received`, so what its answer implies is
    // checked against Stripe's shape in `common::stripe`'s tests, not here.)
    ship(&app, &vendor, &id).await;
    let made = || async {
        sqlx::query_as::<_, (i64, bool)>(
            "SELECT amount_minor, done_at IS NOT NULL FROM payment_calls WHERE kind = 'capture'",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("calls")
    };
    wait_until(
        "the capture call was made",
        Duration::from_secs(20),
        || async { made().await.is_some_and(|(_, done)| done) },
    )
    .await;
    assert_eq!(made().await, Some((2500, true)), "what shipped, no more");
    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["status"], "succeeded");
}
