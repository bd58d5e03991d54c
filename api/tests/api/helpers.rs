//! Test harness: runs the real api (`Application`, as `main` does; with the outbox relay and
//! live hub when asked, and workers) on a random port against the test's own database and
//! its own exchanges and queues.

use std::{sync::Arc, time::Duration};

use api::{accounts, application::Application, auth::password, state::AppState};
use common::{broker::Topology, config::Settings, domain::Role};
use lapin::{BasicProperties, options::BasicPublishOptions};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker::consumer::Worker;

pub const PASSWORD: &str = "correct-horse-battery";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    topology: Option<Topology>,
}

/// A signed-in user.
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

/// Settings from the environment with per-test names and no log files.
pub fn test_settings(overrides: &[(&str, &str)]) -> Settings {
    let run = Uuid::now_v7().simple().to_string();
    let exchange = format!("test.{run}");
    let queue = format!("test.{run}.orders");
    let defaults = [
        ("AMQP_EXCHANGE", exchange.as_str()),
        ("AMQP_QUEUE", queue.as_str()),
        ("LOG_DIR", ""),
    ];
    Settings::from_lookup(|name| {
        overrides
            .iter()
            .chain(defaults.iter())
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| std::env::var(name).ok())
    })
    .expect("test settings are valid")
}

impl TestApp {
    /// The api alone: no broker connection (readiness reports it down).
    pub async fn spawn(pool: PgPool) -> Self {
        Self::start(pool, test_settings(&[]), false).await
    }

    /// The api with its outbox relay and live updates connected to RabbitMQ.
    pub async fn spawn_with_broker(pool: PgPool) -> Self {
        Self::start(pool, test_settings(&[]), true).await
    }

    /// The whole system: api, relay and `workers` competing workers.
    pub async fn spawn_pipeline(pool: PgPool, workers: usize) -> Self {
        let app = Self::spawn_with_broker(pool).await;
        app.start_workers(workers);
        app
    }

    /// Starts `count` more workers consuming this test's queue.
    pub fn start_workers(&self, count: usize) {
        for _ in 0..count {
            let worker = Worker {
                pool: self.pool.clone(),
                settings: self.state.settings.clone(),
            };
            tokio::spawn(worker.run(self.shutdown.clone()));
        }
    }

    pub async fn start(test_pool: PgPool, settings: Settings, with_relay: bool) -> Self {
        // The app gets a pool of its own, configured as in production (acquire and
        // statement timeouts included), on the test's database.
        let database = &settings.database;
        let options = common::db::session_options(database, (*test_pool.connect_options()).clone());
        let pool = common::db::pool_options(database).connect_lazy_with(options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut app = Application::build(pool.clone(), settings, listener).expect("app");
        let address = format!("http://{}", app.local_addr().expect("address"));
        let state = app.state.clone();
        if !with_relay {
            app = app.without_broker();
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        let topology = with_relay.then(|| Topology::new(&state.settings.broker));
        if with_relay {
            wait_until("the relay connects", Duration::from_secs(10), || {
                let connected = state.broker.is_connected();
                async move { connected }
            })
            .await;
        }
        worker::webhooks::install_tls_provider();
        Self {
            address,
            pool,
            state,
            client: reqwest::Client::new(),
            shutdown,
            topology,
        }
    }

    /// Deletes this test's exchanges and queues on drop, for tests whose broker traffic
    /// comes from processes they start themselves.
    pub fn clean_up_broker_on_drop(&mut self) {
        self.topology = Some(Topology::new(&self.state.settings.broker));
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.state.settings.clone()
    }

    /// Publishes `body` to this test's exchange as the relay would.
    pub async fn publish_raw(&self, routing_key: &str, message_id: &str, body: &[u8]) {
        let settings = self.settings();
        let connection = common::broker::connect(&settings.broker, "test-publisher")
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirms");
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into());
        channel
            .basic_publish(
                settings.broker.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        connection.close(200, "done".into()).await.expect("close");
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Creates an active user of `role` directly in the database, then signs in over HTTP.
    pub async fn user(&self, role: Role, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let mut conn = self.pool.acquire().await.expect("connection");
        let user = accounts::insert(
            &mut conn,
            accounts::NewUser {
                email: email.clone(),
                username: username.to_owned(),
                full_name: Some(format!("{username} tester")),
                password_hash: password_hash().await,
                role,
            },
        )
        .await
        .expect("user inserted");
        let tokens = self.login(username, PASSWORD).await;
        assert_eq!(
            tokens.0,
            StatusCode::OK,
            "login of {username}: {}",
            tokens.1
        );
        TestUser {
            id: user.id,
            email,
            token: tokens.1["access_token"].as_str().expect("token").to_owned(),
            refresh_token: tokens.1["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        }
    }

    /// Presents a refresh token; the status and the body.
    pub async fn refresh(&self, token: &str) -> (StatusCode, Value) {
        let response = self
            .post("/api/auth/refresh", None, json!({ "refresh_token": token }))
            .await;
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn login(&self, login: &str, password: &str) -> (StatusCode, Value) {
        let response = self
            .post(
                "/api/auth/login",
                None,
                json!({ "username": login, "password": password }),
            )
            .await;
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

impl TestApp {
    /// A product created through the API by `staff`.
    pub async fn product(&self, staff: &TestUser, sku: &str, price: &str, stock: i32) -> Value {
        let body = json!({ "sku": sku, "name": format!("Product {sku}"), "description": "test product", "price": price, "stock": stock });
        let response = self.post("/api/products", Some(&staff.token), body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("product")
    }

    /// An order of `quantity` × the product with `sku`, placed by `customer`; returns its body.
    pub async fn order(&self, customer: &TestUser, sku: &str, quantity: i32) -> Value {
        let response = self
            .post(
                "/api/orders",
                Some(&customer.token),
                order_body(&[(sku, quantity)]),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("order")
    }

    /// The id of a new order, as `order` places it.
    pub async fn order_id(&self, customer: &TestUser, sku: &str, quantity: i32) -> String {
        let order = self.order(customer, sku, quantity).await;
        order["id"].as_str().expect("id").to_owned()
    }

    /// A vendor named "vendor" and a customer named "alice", both signed in.
    pub async fn vendor_and_customer(&self) -> (TestUser, TestUser) {
        (
            self.user(Role::Vendor, "vendor").await,
            self.user(Role::Customer, "alice").await,
        )
    }

    /// Waits until the order's status is `status`, returning the order.
    pub async fn wait_for_status(&self, token: &str, order_id: &str, status: &str) -> Value {
        let path = format!("/api/orders/{order_id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let order: Value = self.get(&path, token).await.json().await.expect("order");
            if order["status"] == status {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} stayed {} instead of {status}",
                order["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Has `staff` ask for a status change (asserting 202) and waits until it is applied.
    pub async fn move_order(&self, staff: &TestUser, order_id: &str, change: Value) -> Value {
        let path = format!("/api/orders/{order_id}/status");
        let response = self.patch(&path, &staff.token, change.clone()).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{change}");
        let status = change["status"].as_str().expect("status");
        self.wait_for_status(&staff.token, order_id, status).await
    }

    /// Stock and reserved units of a product.
    pub async fn stock_of(&self, sku: &str) -> (i32, i32) {
        sqlx::query_as("SELECT stock, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .expect("product row")
    }
}

/// A URL to the test's own database, for processes started by the test.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("database")
    )
}

/// A valid order body for the given (sku, quantity) lines.
pub fn order_body(lines: &[(&str, i32)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({ "product_sku": sku, "quantity": quantity }))
        .collect();
    json!({
        "items": items,
        "customer_name": "Test Customer",
        "customer_email": "customer@example.com",
        "customer_phone": "+1 555 0100",
        "shipping_address": "1 Test Street, Testville",
    })
}

/// One hash of `PASSWORD` for every user of the test binary (hashing is deliberately slow).
async fn password_hash() -> String {
    static HASH: OnceCell<String> = OnceCell::const_new();
    HASH.get_or_init(|| async { password::hash(PASSWORD.to_owned()).await.expect("hash") })
        .await
        .clone()
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the response is a problem document with `status`, returning its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail", "code"] {
        assert!(body[member].is_string(), "problem lacks {member}: {body}");
    }
    body
}

impl Drop for TestApp {
    /// Stops the app's tasks and deletes the test's exchanges and queues, even when the
    /// test panicked.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Some(topology) = self.topology.take() else {
            return;
        };
        let settings = self.state.settings.broker.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let Ok(connection) = common::broker::connect(&settings, "test-cleanup").await
                else {
                    return;
                };
                let Ok(channel) = connection.create_channel().await else {
                    return;
                };
                for queue in topology.queues() {
                    let _ = channel.queue_delete(queue.into(), Default::default()).await;
                }
                for exchange in topology.exchanges() {
                    let _ = channel
                        .exchange_delete(exchange.into(), Default::default())
                        .await;
                }
                let _ = connection.close(200, "test done".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Writes `envelope` into the outbox as the api and workers do, for the relay to publish.
pub async fn enqueue(conn: &mut sqlx::PgConnection, envelope: &common::events::Envelope) {
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.event_id)
    .bind(envelope.order_id)
    .bind(envelope.seq)
    .bind(envelope.event_type.routing_key())
    .bind(serde_json::to_value(envelope).expect("json"))
    .execute(conn)
    .await
    .expect("outbox row");
}
