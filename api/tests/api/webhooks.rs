//! Webhooks end to end: the api, a worker and a real HTTP receiver on loopback (allowed by
//! `WEBHOOK_ALLOWED_HOSTS`, as the SSRF guard refuses loopback otherwise). Signatures are
//! checked with the Standard Webhooks reference library (`standardwebhooks` crate).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use standardwebhooks::Webhook;
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{TestApp, TestUser, assert_problem, test_settings, wait_until},
    mail::free_port,
};

/// One request the receiver took.
#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().expect("ascii")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer with, in order; then 200.
    answers: VecDeque<u16>,
    /// Time taken over each request before answering.
    delay: Duration,
    /// Sent as `Location` with every answer.
    location: Option<String>,
    received: Vec<Received>,
    /// Requests being answered now, and the most at once since `reset_most_in_flight`.
    in_flight: usize,
    most_in_flight: usize,
}

/// Counts a request as in flight until its handler ends (or is dropped: a client that
/// times out takes the handler's future with it).
struct InFlight(Arc<Mutex<Script>>);

impl InFlight {
    fn start(script: &Arc<Mutex<Script>>) -> Self {
        let mut locked = script.lock().expect("script");
        locked.in_flight += 1;
        locked.most_in_flight = locked.most_in_flight.max(locked.in_flight);
        Self(script.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().expect("script").in_flight -= 1;
    }
}

/// A local HTTP receiver that records every request and answers as scripted.
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start(answers: &[u16]) -> Self {
        Self::start_on(free_port(), answers).await
    }

    pub async fn start_on(port: u16, answers: &[u16]) -> Self {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.iter().copied().collect(),
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            script,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    fn answer_from_now_on(&self, answers: &[u16]) {
        self.script.lock().expect("script").answers = answers.iter().copied().collect();
    }

    pub fn take_time(&self, delay: Duration) {
        self.script.lock().expect("script").delay = delay;
    }

    fn reset_most_in_flight(&self) {
        let mut script = self.script.lock().expect("script");
        script.most_in_flight = script.in_flight;
    }

    fn most_in_flight(&self) -> usize {
        self.script.lock().expect("script").most_in_flight
    }

    fn redirect_to(&self, location: &str) {
        self.script.lock().expect("script").location = Some(location.to_owned());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn take(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, HeaderMap, &'static str) {
    let _in_flight = InFlight::start(&script);
    let (status, delay, location) = {
        let mut script = script.lock().expect("script");
        script.received.push(Received { headers, body });
        let status = script.answers.pop_front().unwrap_or(200);
        (status, script.delay, script.location.clone())
    };
    tokio::time::sleep(delay).await;
    let mut answer = HeaderMap::new();
    if let Some(location) = location {
        answer.insert("location", location.parse().expect("a header value"));
    }
    let status = AxumStatus::from_u16(status).expect("status");
    (status, answer, "receiver says hi")
}

/// Retries compressed from a day to well under a second, loopback allowed.
const FAST: [(&str, &str); 2] = [
    ("WEBHOOK_RETRY_SCHEDULE", "100ms,200ms,300ms"),
    ("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1"),
];

struct Shop {
    app: TestApp,
    admin: TestUser,
    vendor: TestUser,
    alice: TestUser,
}

/// The api and one worker with `overrides` (after `FAST`), an admin, a vendor, alice and
/// a product `LAMP` with 50 in stock.
async fn shop(pool: &PgPool, overrides: &[(&str, &str)]) -> Shop {
    let settings: Vec<(&str, &str)> = overrides.iter().chain(FAST.iter()).copied().collect();
    let app = TestApp::start(pool.clone(), test_settings(&settings), true).await;
    app.start_workers(1);
    let admin = app.user(Role::Admin, "root").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 50).await;
    Shop {
        app,
        admin,
        vendor,
        alice,
    }
}

impl Shop {
    /// Registers an endpoint for `types` (all when empty); returns its id and secret.
    async fn endpoint(&self, url: &str, types: &[&str]) -> (String, String) {
        let body = json!({ "url": url, "event_types": types, "description": "warehouse" });
        let response = self
            .app
            .post("/api/webhooks", Some(&self.admin.token), body)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.expect("endpoint");
        let secret = created["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("whsec_"));
        (created["id"].as_str().expect("id").to_owned(), secret)
    }

    async fn endpoint_state(&self, id: &str) -> Value {
        let path = format!("/api/webhooks/{id}");
        self.app
            .get(&path, &self.admin.token)
            .await
            .json()
            .await
            .expect("endpoint")
    }

    async fn deliveries(&self, id: &str, query: &str) -> Value {
        let path = format!("/api/webhooks/{id}/deliveries{query}");
        let response = self.app.get(&path, &self.admin.token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("deliveries")
    }

    /// Waits until the endpoint has `count` deliveries in `status`.
    async fn wait_for_deliveries(&self, id: &str, status: &str, count: i64) -> Value {
        let query = format!("?status={status}&size=100");
        wait_until(
            &format!("{count} deliveries {status}"),
            Duration::from_secs(20),
            || async { self.deliveries(id, &query).await["total"] == count },
        )
        .await;
        self.deliveries(id, &query).await
    }
}

fn verifies(secret: &str, received: &Received) -> bool {
    Webhook::new(secret)
        .expect("a secret")
        .verify(&received.body, &received.headers)
        .is_ok()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_failing_twice_then_succeeding_sees_three_signed_attempts_logged_once_each(
    pool: PgPool,
) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[500, 503]).await;
    let (endpoint, secret) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;

    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let delivery = &log["items"][0];
    assert_eq!(delivery["order_id"], order.as_str());
    assert_eq!(delivery["event_type"], "order.created");
    assert_eq!(delivery["attempts"], 3);
    let statuses: Vec<&Value> = delivery["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["response_status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(
        delivery["attempt_log"][2]["response_excerpt"],
        "receiver says hi"
    );
    let failed = shop.deliveries(&endpoint, "?status=failed").await;
    assert_eq!(failed["total"], 0);

    let received = receiver.received();
    assert_eq!(received.len(), 3, "three attempts, then silence");
    for attempt in &received {
        assert_eq!(
            attempt.header("webhook-id"),
            delivery["event_id"].as_str().expect("id")
        );
        assert_eq!(attempt.header("content-type"), "application/json");
        assert!(verifies(&secret, attempt), "the signature verifies");
        assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", attempt));
        let body = attempt.json();
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["order_id"], order.as_str());
        assert_eq!(body["seq"], 1);
    }
    let endpoint_state = shop.endpoint_state(&endpoint).await;
    assert_eq!(
        endpoint_state["failing_since"],
        Value::Null,
        "a success ends the run"
    );
    assert!(
        endpoint_state.get("secret").is_none(),
        "the secret is shown once"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_endpoint_gets_the_types_it_chose_and_a_cancellation_as_order_cancelled(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let changes = Receiver::start(&[]).await;
    let cancellations = Receiver::start(&[]).await;
    let (changes_id, _) = shop.endpoint(&changes.url, &["order.status_changed"]).await;
    let (cancellations_id, _) = shop
        .endpoint(&cancellations.url, &["order.cancelled"])
        .await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.app
        .wait_for_status(&shop.alice.token, &order, "confirmed")
        .await;
    let response = shop
        .app
        .delete(&format!("/api/orders/{order}"), &shop.alice.token)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    shop.app
        .wait_for_status(&shop.alice.token, &order, "cancelled")
        .await;

    shop.wait_for_deliveries(&changes_id, "succeeded", 1).await;
    shop.wait_for_deliveries(&cancellations_id, "succeeded", 1)
        .await;
    let change = &changes.received()[0].json();
    assert_eq!(change["type"], "order.status_changed");
    assert_eq!(change["payload"]["to"], "confirmed");
    let cancellation = &cancellations.received()[0].json();
    assert_eq!(cancellation["type"], "order.cancelled");
    assert_eq!(cancellation["payload"]["from"], "confirmed");
    assert_eq!(changes.received().len(), 1);
    assert_eq!(cancellations.received().len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn gone_disables_the_endpoint_and_tells_the_admins(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[410]).await;
    let (endpoint, _) = shop.endpoint(&receiver.url, &[]).await;
    shop.app.order_id(&shop.alice, "LAMP", 1).await;

    wait_until(
        "the endpoint is disabled",
        Duration::from_secs(20),
        || async { shop.endpoint_state(&endpoint).await["enabled"] == false },
    )
    .await;
    let state = shop.endpoint_state(&endpoint).await;
    assert_eq!(state["disabled_reason"], "the endpoint answered 410 Gone");
    let failed = shop.deliveries(&endpoint, "?status=failed").await;
    assert_eq!(failed["items"][0]["attempts"], 1, "410 is not retried");
    let notifications: Value = shop
        .app
        .get("/api/notifications", &shop.admin.token)
        .await
        .json()
        .await
        .expect("notifications");
    assert_eq!(
        notifications["items"][0]["kind"],
        "webhook_endpoint_disabled"
    );

    // Events after that are not delivered; re-sending waits until an admin enables it.
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1);
    let resend = format!("/api/webhooks/{endpoint}/deliveries/resend-failed");
    let since = json!({ "since": "2020-01-01T00:00:00Z" });
    let response = shop.app.post(&resend, Some(&shop.admin.token), since).await;
    assert_problem(response, StatusCode::CONFLICT).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_down_for_a_while_gets_every_event_once_it_returns(pool: PgPool) {
    let shop = shop(
        &pool,
        &[(
            "WEBHOOK_RETRY_SCHEDULE",
            "200ms,400ms,800ms,1600ms,3200ms,6400ms",
        )],
    )
    .await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (endpoint, secret) = shop.endpoint(&url, &[]).await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.app
        .wait_for_status(&shop.alice.token, &order, "confirmed")
        .await;
    for status in ["processing", "shipped", "delivered"] {
        let mut change = json!({ "status": status });
        if status == "shipped" {
            change["tracking_number"] = json!("TRK-1");
        }
        shop.app.move_order(&shop.vendor, &order, change).await;
    }
    wait_until(
        "every event failed at least once",
        Duration::from_secs(10),
        || async {
            let log = shop.deliveries(&endpoint, "?status=pending").await;
            log["total"] == 5
                && log["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .all(|d| d["attempts"].as_i64() >= Some(1))
        },
    )
    .await;
    let log = shop.deliveries(&endpoint, "?status=pending").await;
    let refused = &log["items"][0]["attempt_log"][0];
    assert_eq!(refused["response_status"], Value::Null);
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("could not connect"),
        "{refused}"
    );

    let receiver = Receiver::start_on(port, &[]).await;
    shop.wait_for_deliveries(&endpoint, "succeeded", 5).await;
    let received = receiver.received();
    let mut types: Vec<(i64, String)> = received
        .iter()
        .map(|r| {
            assert!(verifies(&secret, r));
            let body = r.json();
            (
                body["seq"].as_i64().expect("seq"),
                body["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    types.sort();
    let expected: Vec<(i64, String)> = [
        (1, "order.created"),
        (1, "order.status_changed"),
        (2, "order.status_changed"),
        (3, "order.status_changed"),
        (4, "order.status_changed"),
    ]
    .iter()
    .map(|(seq, kind)| (*seq, (*kind).to_owned()))
    .collect();
    assert_eq!(types, expected, "every event, once each");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_private_address_is_refused_unless_allowlisted(pool: PgPool) {
    let shop = shop(&pool, &[("WEBHOOK_ALLOWED_HOSTS", "")]).await;
    let receiver = Receiver::start(&[]).await;
    for url in [
        receiver.url.clone(),
        receiver.url.replace("127.0.0.1", "localhost"),
        receiver.url.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let body = json!({ "url": url });
        let response = shop
            .app
            .post("/api/webhooks", Some(&shop.admin.token), body)
            .await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}");
        let message = problem["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains("not a public address"), "{url}: {message}");
    }
    let listed: Value = shop
        .app
        .get("/api/webhooks", &shop.admin.token)
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed["total"], 0, "nothing saved");

    // One saved while allowed (or whose name now resolves privately) is refused at delivery.
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, secret) VALUES (gen_random_uuid(), $1, $2)",
    )
    .bind(receiver.url.replace("127.0.0.1", "localhost"))
    .bind(common::webhooks::generate_secret())
    .execute(&pool)
    .await
    .expect("endpoint");
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    wait_until("an attempt is refused", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_attempts WHERE error LIKE '%not a public address%'",
        )
        .fetch_one(&pool)
        .await
        .expect("attempts")
            > 0
    })
    .await;
    assert!(
        receiver.received().is_empty(),
        "nothing reached the private address"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn after_a_rotation_deliveries_verify_with_the_new_secret_and_the_old(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[]).await;
    let (endpoint, old) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let response = shop
        .app
        .post(
            &format!("/api/webhooks/{endpoint}/rotate-secret"),
            Some(&shop.admin.token),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.expect("rotated");
    let new = rotated["secret"].as_str().expect("secret");
    assert_ne!(new, old);
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let received = &receiver.received()[0];
    assert_eq!(received.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(new, received), "the new secret verifies");
    assert!(
        verifies(&old, received),
        "the old one too, during the overlap"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_endpoint_failing_too_long_is_disabled_then_failed_deliveries_are_resent(pool: PgPool) {
    let shop = shop(
        &pool,
        &[
            ("WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
            ("WEBHOOK_DISABLE_AFTER", "2s"),
        ],
    )
    .await;
    let receiver = Receiver::start(&[500; 100]).await;
    let (endpoint, _) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let first = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.wait_for_deliveries(&endpoint, "failed", 1).await;
    assert!(shop.endpoint_state(&endpoint).await["failing_since"].is_string());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    wait_until(
        "the endpoint is disabled",
        Duration::from_secs(20),
        || async { shop.endpoint_state(&endpoint).await["enabled"] == false },
    )
    .await;
    let state = shop.endpoint_state(&endpoint).await;
    assert_eq!(
        state["disabled_reason"],
        "no delivery succeeded for 2 seconds"
    );
    let notifications: Value = shop
        .app
        .get("/api/notifications", &shop.admin.token)
        .await
        .json()
        .await
        .expect("notifications");
    assert_eq!(
        notifications["items"][0]["kind"],
        "webhook_endpoint_disabled"
    );

    // The receiver is mended; the admin enables the endpoint and re-sends what failed.
    receiver.answer_from_now_on(&[]);
    let response = shop
        .app
        .put(
            &format!("/api/webhooks/{endpoint}"),
            &shop.admin.token,
            json!({ "enabled": true }),
        )
        .await;
    let enabled: Value = response.json().await.expect("endpoint");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["failing_since"], Value::Null);
    wait_until(
        "the second is failed or sent",
        Duration::from_secs(20),
        || async { shop.deliveries(&endpoint, "?status=pending").await["total"] == 0 },
    )
    .await;
    let resend = format!("/api/webhooks/{endpoint}/deliveries/resend-failed");
    let response = shop
        .app
        .post(
            &resend,
            Some(&shop.admin.token),
            json!({ "since": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let resent: Value = response.json().await.expect("resent");
    assert!(resent["resent"].as_i64() >= Some(1));
    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 2).await;
    let orders: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["order_id"].as_str().expect("id"))
        .collect();
    assert!(orders.contains(&first.as_str()) && orders.contains(&second.as_str()));

    // Re-sending one delivery sends it again under the same webhook-id.
    let event_id = log["items"][0]["event_id"].as_str().expect("event id");
    let before = receiver.received().len();
    let response = shop
        .app
        .post(
            &format!("/api/webhooks/{endpoint}/deliveries/{event_id}/resend"),
            Some(&shop.admin.token),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until("the re-send arrives", Duration::from_secs(20), || async {
        receiver.received().len() > before
    })
    .await;
    assert_eq!(receiver.received()[before].header("webhook-id"), event_id);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn endpoint_input_is_checked_and_changes_nothing_when_refused(pool: PgPool) {
    let app = TestApp::start(pool.clone(), test_settings(&FAST), false).await;
    let admin = app.user(Role::Admin, "root").await;
    for (body, field) in [
        (json!({ "url": "ftp://127.0.0.1/x" }), "url"),
        (json!({ "url": "http://user:pw@127.0.0.1/x" }), "url"),
        (
            json!({ "url": "http://127.0.0.1/x", "event_types": ["order.exploded"] }),
            "event_types[0]",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "description": "x".repeat(501) }),
            "description",
        ),
    ] {
        let response = app.post("/api/webhooks", Some(&admin.token), body).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
    let unknown = format!("/api/webhooks/{}", uuid::Uuid::now_v7());
    assert_problem(app.get(&unknown, &admin.token).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.delete(&unknown, &admin.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_that_hangs_is_timed_out_and_delays_no_order(pool: PgPool) {
    let shop = shop(&pool, &[("WEBHOOK_TIMEOUT", "500ms")]).await;
    let receiver = Receiver::start(&[]).await;
    receiver.take_time(Duration::from_secs(30));
    let (endpoint, _) = shop.endpoint(&receiver.url, &[]).await;
    let started = tokio::time::Instant::now();
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(shop.app.order_id(&shop.alice, "LAMP", 1).await);
    }
    for order in &orders {
        shop.app
            .wait_for_status(&shop.alice.token, order, "confirmed")
            .await;
    }
    let confirming = started.elapsed();
    wait_until("attempts time out", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_attempts WHERE error LIKE 'timed out%'",
        )
        .fetch_one(&pool)
        .await
        .expect("attempts")
            >= 10
    })
    .await;
    let log = shop.deliveries(&endpoint, "?status=pending&size=100").await;
    assert_eq!(
        log["total"], 20,
        "10 orders created and 10 confirmed, all to retry"
    );
    let attempt = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .find_map(|delivery| delivery["attempt_log"].get(0))
        .expect("an attempt");
    assert_eq!(attempt["response_status"], Value::Null);
    assert!(
        attempt["latency_ms"].as_i64().expect("latency") < 5_000,
        "{attempt}"
    );
    assert!(
        confirming < Duration::from_secs(10),
        "orders waited on the receiver: {confirming:?}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn redirects_are_not_followed(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let elsewhere = Receiver::start(&[]).await;
    let receiver = Receiver::start(&[307, 308]).await;
    receiver.redirect_to(&elsewhere.url);
    let (endpoint, _) = shop.endpoint(&receiver.url, &["order.created"]).await;
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let statuses: Vec<&Value> = log["items"][0]["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["response_status"])
        .collect();
    assert_eq!(statuses, [&json!(307), &json!(308), &json!(200)]);
    assert!(
        elsewhere.received().is_empty(),
        "the redirect's target was never called"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_failing_endpoint_gets_a_quarter_of_the_attempts_while_others_flow(pool: PgPool) {
    let shop = shop(
        &pool,
        &[
            ("WEBHOOK_TIMEOUT", "1s"),
            ("WEBHOOK_CONCURRENCY", "8"),
            (
                "WEBHOOK_RETRY_SCHEDULE",
                "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms",
            ),
        ],
    )
    .await;
    let down = Receiver::start(&[]).await;
    down.take_time(Duration::from_secs(30));
    let healthy = Receiver::start(&[]).await;
    let (down_id, _) = shop.endpoint(&down.url, &[]).await;
    let (healthy_id, _) = shop.endpoint(&healthy.url, &["order.created"]).await;
    for _ in 0..12 {
        shop.app.order_id(&shop.alice, "LAMP", 1).await;
    }
    wait_until(
        "the endpoint that is down is failing",
        Duration::from_secs(10),
        || async { shop.endpoint_state(&down_id).await["failing_since"].is_string() },
    )
    .await;
    // The first attempts, made before it was known to fail, time out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    down.reset_most_in_flight();
    let before = down.received().len();
    shop.wait_for_deliveries(&healthy_id, "succeeded", 12).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        down.received().len() > before,
        "the failing endpoint is still tried"
    );
    assert!(
        down.most_in_flight() <= 2,
        "a quarter of 8 slots at most, saw {}",
        down.most_in_flight()
    );
}
