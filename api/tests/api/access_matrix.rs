//! The OWASP API Top 10 checks as a matrix over every documented operation (read from
//! `/openapi.json`, so a new route without a row here fails the suite):
//!
//! - broken object-level authorization: another customer's id → 404;
//! - broken function-level authorization: staff routes as a customer, admin routes as a
//!   customer or a vendor → 403; every protected route without a token → 401;
//! - mass assignment: every privileged field a request schema does not declare, added to a
//!   valid body → 422 naming it, and nothing in the database changes.

use std::collections::BTreeSet;

use common::domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestUser};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No token needed.
    Public,
    /// Any signed-in user, on nothing that belongs to someone else.
    SignedIn,
    /// A customer's own resource (or staff): another customer gets 404.
    Owner,
    /// Vendors and admins.
    Staff,
    /// Admins only.
    Admin,
}

use Access::*;

const STRIPE_WEBHOOK: &str = "/api/payments/stripe/webhook";

/// Every operation, its access rule, and a valid body for those that take one.
/// `{order}`, `{product}`, `{user}` and `{notification}` are filled in with real ids.
const OPERATIONS: &[(&str, &str, Access, Option<&str>)] = &[
    (
        "POST",
        "/api/auth/register",
        Public,
        Some(r#"{"email":"new@example.com","username":"newbie","password":"long-enough-pass"}"#),
    ),
    (
        "POST",
        "/api/auth/login",
        Public,
        Some(r#"{"username":"nobody","password":"long-enough-pass"}"#),
    ),
    ("GET", "/api/auth/me", SignedIn, None),
    (
        "POST",
        "/api/auth/refresh",
        Public,
        Some(r#"{"refresh_token":"not-a-token"}"#),
    ),
    (
        "POST",
        "/api/auth/logout",
        SignedIn,
        Some(r#"{"refresh_token":"not-a-token"}"#),
    ),
    ("POST", "/api/auth/logout-all", SignedIn, None),
    ("GET", "/api/users/me", SignedIn, None),
    (
        "PUT",
        "/api/users/me",
        SignedIn,
        Some(r#"{"full_name":"New Name"}"#),
    ),
    ("GET", "/api/users", Admin, None),
    ("GET", "/api/users/search", Admin, None),
    ("GET", "/api/users/{id}", Admin, None),
    (
        "PUT",
        "/api/users/{id}",
        Admin,
        Some(r#"{"full_name":"New Name"}"#),
    ),
    ("DELETE", "/api/users/{id}", Admin, None),
    ("DELETE", "/api/users/{id}/login-lockout", Admin, None),
    ("GET", "/api/products", SignedIn, None),
    (
        "POST",
        "/api/products",
        Staff,
        Some(r#"{"sku":"NEW-1","name":"New","price":"1.00"}"#),
    ),
    ("GET", "/api/products/{id}", SignedIn, None),
    (
        "PUT",
        "/api/products/{id}",
        Staff,
        Some(r#"{"name":"Renamed"}"#),
    ),
    (
        "POST",
        "/api/products/{id}/stock",
        Staff,
        Some(r#"{"delta":1}"#),
    ),
    (
        "POST",
        "/api/orders",
        SignedIn,
        Some(
            r#"{"items":[{"product_sku":"MUG","quantity":1}],"customer_name":"A","customer_email":"a@example.com","shipping_address":"1 Main St"}"#,
        ),
    ),
    ("GET", "/api/orders", Staff, None),
    ("GET", "/api/orders/my", SignedIn, None),
    ("GET", "/api/orders/{id}", Owner, None),
    (
        "PUT",
        "/api/orders/{id}",
        Owner,
        Some(r#"{"notes":"leave at the door"}"#),
    ),
    ("DELETE", "/api/orders/{id}", Owner, None),
    (
        "PATCH",
        "/api/orders/{id}/status",
        Staff,
        Some(r#"{"status":"processing"}"#),
    ),
    ("GET", "/api/orders/{id}/events", Owner, None),
    ("GET", "/api/orders/{id}/payments", Owner, None),
    (
        "POST",
        "/api/orders/{id}/payments",
        Staff,
        Some(r#"{"amount":"1.00","reference":"COD-1"}"#),
    ),
    (
        "POST",
        "/api/orders/{id}/refunds",
        Staff,
        Some(r#"{"amount":"1.00","reason":"goodwill"}"#),
    ),
    ("POST", "/api/orders/{id}/capture", Staff, None),
    (
        "POST",
        "/api/orders/{id}/fulfillments",
        Staff,
        Some(
            r#"{"lines":[{"item_id":"01936f0e-0000-7000-8000-000000000001","quantity":1}],"tracking_number":"TRK-1"}"#,
        ),
    ),
    ("GET", "/api/orders/{id}/fulfillments", Owner, None),
    (
        "POST",
        "/api/orders/{id}/cancellations",
        Owner,
        Some(r#"{"lines":[{"item_id":"01936f0e-0000-7000-8000-000000000001","quantity":1}]}"#),
    ),
    (
        "PATCH",
        "/api/orders/{id}/fulfillments/{fulfillment_id}",
        Staff,
        Some(r#"{"status":"delivered"}"#),
    ),
    ("GET", "/api/orders/stream", SignedIn, None),
    ("GET", "/api/orders/{id}/stream", Owner, None),
    ("POST", "/api/auth/stream-ticket", SignedIn, None),
    ("POST", "/api/orders/{id}/redrive", Admin, None),
    (
        "POST",
        "/api/orders/{id}/skip",
        Admin,
        Some(r#"{"reason":"poisoned"}"#),
    ),
    ("GET", "/api/notifications", SignedIn, None),
    ("POST", "/api/notifications/{id}/read", Owner, None),
    ("POST", "/api/notifications/read-all", SignedIn, None),
    ("GET", "/api/dead-letters", Admin, None),
    (
        "POST",
        "/api/dead-letters/redrive",
        Admin,
        Some(r#"{"message_ids":["none"]}"#),
    ),
    ("GET", "/api/webhooks", Admin, None),
    (
        "POST",
        "/api/webhooks",
        Admin,
        Some(r#"{"url":"https://93.184.216.34/hook"}"#),
    ),
    ("GET", "/api/webhooks/{id}", Admin, None),
    (
        "PUT",
        "/api/webhooks/{id}",
        Admin,
        Some(r#"{"description":"warehouse"}"#),
    ),
    ("DELETE", "/api/webhooks/{id}", Admin, None),
    ("POST", "/api/webhooks/{id}/rotate-secret", Admin, None),
    ("GET", "/api/webhooks/{id}/deliveries", Admin, None),
    (
        "POST",
        "/api/webhooks/{id}/deliveries/{event_id}/resend",
        Admin,
        None,
    ),
    (
        "POST",
        "/api/webhooks/{id}/deliveries/resend-failed",
        Admin,
        Some(r#"{"since":"2026-01-01T00:00:00Z"}"#),
    ),
    // Stripe signs it; under the `manual` provider it answers 404.
    (
        "POST",
        STRIPE_WEBHOOK,
        Public,
        Some(r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{}}}"#),
    ),
    ("GET", "/health", Public, None),
    ("GET", "/health/ready", Public, None),
];

/// Fields only the server (or an admin, through its own route) may set.
const PRIVILEGED_FIELDS: &[&str] = &[
    "role",
    "is_active",
    "user_id",
    "customer_id",
    "status",
    "total_amount",
    "unit_price",
    "stock",
    "reserved",
];

struct World {
    app: TestApp,
    admin: TestUser,
    vendor: TestUser,
    alice: TestUser,
    bob: TestUser,
    order: String,
    product: String,
    notification: String,
}

impl World {
    async fn new(pool: PgPool) -> Self {
        let app = TestApp::spawn(pool).await;
        let admin = app.user(Role::Admin, "root").await;
        let (vendor, alice) = app.vendor_and_customer().await;
        let bob = app.user(Role::Customer, "bob").await;
        let product = app.product(&vendor, "MUG", "5.00", 50).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let order = app.order_id(&alice, "MUG", 1).await;
        let notification = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, message) VALUES ($1, $2, 'test', 'hello')",
        )
        .bind(notification)
        .bind(alice.id)
        .execute(&app.pool)
        .await
        .expect("notification");
        Self {
            app,
            admin,
            vendor,
            alice,
            bob,
            order,
            product,
            notification: notification.to_string(),
        }
    }

    /// `path` with its `{id}` replaced by the id of the resource it names.
    fn concrete(&self, path: &str) -> String {
        let id = if path.starts_with("/api/orders") {
            &self.order
        } else if path.starts_with("/api/products") {
            &self.product
        } else if path.starts_with("/api/notifications") {
            &self.notification
        } else {
            &self.alice.id.to_string()
        };
        path.replace("{id}", id)
            .replace("{event_id}", &self.order)
            .replace("{fulfillment_id}", &self.order)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .app
            .request(method, &self.concrete(path), token, body)
            .await;
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Every table a request could change, as one fingerprint.
    async fn fingerprint(&self) -> String {
        sqlx::query_scalar(
            "SELECT concat_ws('/',
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM users t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM products t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM orders t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM order_items t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM order_events t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM notifications t),
                 (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM webhook_endpoints t),
                 (SELECT count(*)::text FROM outbox))",
        )
        .fetch_one(&self.app.pool)
        .await
        .expect("fingerprint")
    }
}

async fn document(app: &TestApp) -> Value {
    app.request(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .expect("openapi")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_documented_operation_has_an_access_rule(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = document(&app).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("item")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let covered: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(method, path, _, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        documented, covered,
        "add a row to OPERATIONS for each new route"
    );
    for (method, path, access, body) in OPERATIONS {
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert_eq!(
            operation["security"].is_array(),
            *access != Public,
            "{method} {path}: the document's security does not match its access rule"
        );
        assert_eq!(
            operation["requestBody"].is_object(),
            body.is_some(),
            "{method} {path}: body"
        );
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn protected_operations_refuse_anonymous_callers_lower_roles_and_other_customers(
    pool: PgPool,
) {
    let world = World::new(pool).await;
    let mut attacks = 0;
    for (method, path, access, body) in OPERATIONS {
        let body = body.map(|b| serde_json::from_str::<Value>(b).expect("sample body"));
        if *access != Public {
            let (status, problem) = world.call(method, path, None, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a token: {problem}"
            );
            attacks += 1;
        }
        let forbidden: &[&TestUser] = match access {
            Staff => &[&world.alice],
            Admin => &[&world.alice, &world.vendor],
            _ => &[],
        };
        for caller in forbidden {
            let (status, problem) = world
                .call(method, path, Some(&caller.token), body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} as {}: {problem}",
                caller.email
            );
            attacks += 1;
        }
        if *access == Owner {
            let (status, problem) = world
                .call(method, path, Some(&world.bob.token), body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {path} as another customer: {problem}"
            );
            attacks += 1;
        }
    }
    // The owner's own calls still work: the 404s above are about ownership, not the route.
    let (status, _) = world
        .call("GET", "/api/orders/{id}", Some(&world.alice.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    eprintln!(
        "{} operations, {attacks} unauthorized calls refused",
        OPERATIONS.len()
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn privileged_fields_are_refused_on_every_write_and_change_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let doc = document(&world.app).await;
    let before = world.fingerprint().await;
    let mut attempts = 0;
    for (method, path, _, body) in OPERATIONS {
        let Some(body) = body else { continue };
        // Stripe's own JSON, taken only with Stripe's signature: no fields of ours in it.
        if *path == STRIPE_WEBHOOK {
            continue;
        }
        let declared = request_fields(&doc, method, path);
        for field in PRIVILEGED_FIELDS.iter().filter(|f| !declared.contains(**f)) {
            let mut smuggled: Value = serde_json::from_str(body).expect("sample body");
            smuggled[*field] = json!("admin");
            let (status, problem) = world
                .call(method, path, Some(&world.admin.token), Some(smuggled))
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} with {field}: {problem}"
            );
            let named = problem["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(
                named.contains(field),
                "{method} {path}: the refusal names `{field}`: {problem}"
            );
            attempts += 1;
        }
    }
    assert_eq!(
        world.fingerprint().await,
        before,
        "a refused request changed something"
    );
    assert!(attempts > 80, "only {attempts} attempts");
    eprintln!("{attempts} mass-assignment attempts refused");
}

/// The top-level properties the request schema of an operation declares.
fn request_fields(doc: &Value, method: &str, path: &str) -> BTreeSet<String> {
    let content =
        &doc["paths"][path][method.to_lowercase()]["requestBody"]["content"]["application/json"];
    let mut schema = &content["schema"];
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().expect("schema name");
        schema = &doc["components"]["schemas"][name];
    }
    schema["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}
