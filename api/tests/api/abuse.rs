//! Hostile load: sign-in budgets that hold under parallel guessing, per-address limits,
//! bounded password hashing, load shedding and the headers every answer carries.

use common::domain::Role;
use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_problem, test_settings};

async fn app_with(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    TestApp::start(pool, test_settings(overrides), false).await
}

/// A login attempt sent as if from `client` through a proxy on loopback.
async fn login_from(app: &TestApp, client: &str, login: &str, password: &str) -> Response {
    app.client
        .post(format!("{}/api/auth/login", app.address))
        .header("x-forwarded-for", client)
        .json(&json!({ "username": login, "password": password }))
        .send()
        .await
        .expect("request sent")
}

fn statuses(responses: &[Response]) -> Vec<u16> {
    let mut codes: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    codes.sort_unstable();
    codes
}

fn count(codes: &[u16], code: u16) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn parallel_guesses_each_spend_the_account_budget(pool: PgPool) {
    let app = app_with(
        pool,
        &[("LOGIN_MAX_FAILURES", "3"), ("PASSWORD_HASH_QUEUE", "64")],
    )
    .await;
    app.user(Role::Customer, "mallory-target").await;
    let passwords: Vec<String> = (0..12).map(|i| format!("guess-{i}-wrong")).collect();
    let guesses = passwords.iter().map(|p| app.login("mallory-target", p));
    let codes: Vec<u16> = join_all(guesses)
        .await
        .into_iter()
        .map(|(status, _)| status.as_u16())
        .collect();
    assert_eq!(
        count(&codes, 401),
        3,
        "exactly the budget reached the password check: {codes:?}"
    );
    assert_eq!(count(&codes, 429), 9, "{codes:?}");
    // Locked now, even with the right password.
    assert_eq!(
        app.login("mallory-target", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn username_and_email_share_one_budget_and_the_owner_gets_back_in_after_the_window(
    pool: PgPool,
) {
    let app = app_with(
        pool,
        &[("LOGIN_MAX_FAILURES", "2"), ("LOGIN_LOCKOUT_SECS", "1")],
    )
    .await;
    let user = app.user(Role::Customer, "olga").await;
    assert_eq!(
        app.login("olga", "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = app.login("OLGA", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(app.login("olga", PASSWORD).await.0, StatusCode::OK);
    // The success cleared the count: a fresh budget.
    assert_eq!(
        app.login("olga", "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("olga", PASSWORD).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_admin_can_clear_a_lockout(pool: PgPool) {
    let app = app_with(pool, &[("LOGIN_MAX_FAILURES", "1")]).await;
    let admin = app.user(Role::Admin, "root").await;
    let vendor = app.user(Role::Vendor, "vlad").await;
    let user = app.user(Role::Customer, "petra").await;
    app.login("petra", "wrong-password").await;
    assert_eq!(
        app.login("petra", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let path = format!("/api/users/{}/login-lockout", user.id);
    assert_problem(
        app.delete(&path, &vendor.token).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        app.delete(&path, &admin.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.login("petra", PASSWORD).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_names_are_throttled_like_accounts_and_overlong_names_refused_first(pool: PgPool) {
    let app = app_with(pool, &[("LOGIN_MAX_FAILURES", "1")]).await;
    assert_eq!(
        app.login("nobody", "whatever-pass").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("nobody", "whatever-pass").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let long_name = "n".repeat(255);
    let (status, body) = app.login(&long_name, "whatever-pass").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "username");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 1, "the overlong name left no trace");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn logins_are_limited_per_client_address(pool: PgPool) {
    let app = app_with(
        pool,
        &[
            ("LOGIN_PER_IP_PER_MINUTE", "3"),
            ("LOGIN_MAX_FAILURES", "100"),
        ],
    )
    .await;
    for i in 0..3 {
        assert_eq!(
            app.login(&format!("name{i}"), "wrong-pass").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "name9", "password": "wrong-pass" }),
        )
        .await;
    let wait = retry_after(&refused);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy(pool: PgPool) {
    let trusting = app_with(
        pool.clone(),
        &[
            ("LOGIN_PER_IP_PER_MINUTE", "1"),
            ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    )
    .await;
    let first = login_from(&trusting, "203.0.113.1", "someone", "wrong-pass").await;
    let second = login_from(&trusting, "203.0.113.2", "someone", "wrong-pass").await;
    let again = login_from(&trusting, "203.0.113.1", "someone", "wrong-pass").await;
    assert_eq!(
        statuses(&[first, second]),
        vec![401, 401],
        "two clients, two budgets"
    );
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);

    // Without TRUSTED_PROXIES the header is the client's own word, and ignored.
    let plain = app_with(pool, &[("LOGIN_PER_IP_PER_MINUTE", "1")]).await;
    let first = login_from(&plain, "203.0.113.1", "someone", "wrong-pass").await;
    let spoofed = login_from(&plain, "203.0.113.2", "someone", "wrong-pass").await;
    assert_eq!(statuses(&[first, spoofed]), vec![401, 429]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn registration_is_limited_per_client_address(pool: PgPool) {
    let app = app_with(pool, &[("REGISTER_PER_IP_PER_HOUR", "2")]).await;
    let register = |name: &str| {
        app.post(
            "/api/auth/register",
            None,
            json!({ "email": format!("{name}@example.com"), "username": name, "password": "long-enough-pass" }),
        )
    };
    assert_eq!(register("reg1").await.status(), StatusCode::CREATED);
    assert_eq!(register("reg2").await.status(), StatusCode::CREATED);
    let refused = register("reg3").await;
    assert!(retry_after(&refused) >= 1);
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn saturated_password_hashing_answers_503_at_once(pool: PgPool) {
    let app = app_with(
        pool,
        &[
            ("PASSWORD_HASH_CONCURRENCY", "1"),
            ("PASSWORD_HASH_QUEUE", "0"),
            ("LOGIN_PER_IP_PER_MINUTE", "1000"),
            ("LOGIN_MAX_FAILURES", "1000"),
        ],
    )
    .await;
    let burst = (0..16).map(|i| {
        app.post(
            "/api/auth/login",
            None,
            json!({ "username": format!("burst{i}"), "password": "wrong-pass" }),
        )
    });
    let responses = join_all(burst).await;
    let codes = statuses(&responses);
    assert!(count(&codes, 503) > 0, "{codes:?}");
    assert_eq!(count(&codes, 503) + count(&codes, 401), 16, "{codes:?}");
    for response in responses {
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry_after(&response) >= 1);
            assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        }
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn requests_beyond_the_in_flight_limit_or_the_time_limit_are_shed(pool: PgPool) {
    let crowded = app_with(
        pool.clone(),
        &[
            ("MAX_IN_FLIGHT_REQUESTS", "2"),
            ("PASSWORD_HASH_QUEUE", "64"),
            ("LOGIN_PER_IP_PER_MINUTE", "1000"),
        ],
    )
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("crowd{i}")).collect();
    let burst = names.iter().map(|name| crowded.login(name, "wrong-pass"));
    let results = join_all(burst).await;
    let shed: Vec<&Value> = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(_, body)| body)
        .collect();
    assert!(
        !shed.is_empty(),
        "12 parallel logins with 2 slots shed none"
    );
    assert!(shed.iter().all(|body| {
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("capacity"))
    }));
    assert_eq!(
        crowded
            .request(reqwest::Method::GET, "/health", None, None)
            .await
            .status(),
        StatusCode::OK,
        "probes are never shed"
    );

    let slow = app_with(pool, &[("REQUEST_TIMEOUT_MS", "1")]).await;
    let timed_out = slow
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "late", "password": "wrong-pass" }),
        )
        .await;
    assert_eq!(retry_after(&timed_out), 1);
    let body = assert_problem(timed_out, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("too long")),
        "{body}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_answer_says_nosniff_and_auth_answers_are_never_cached(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in ["/health", "/no/such/route", "/openapi.json"] {
        let response = app.request(reqwest::Method::GET, path, None, None).await;
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
    app.user(Role::Customer, "nina").await;
    let signed_in = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "nina", "password": PASSWORD }),
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    assert_eq!(signed_in.headers()["cache-control"], "no-store");
    let refused = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "nina", "password": "wrong-pass" }),
        )
        .await;
    assert_eq!(refused.headers()["cache-control"], "no-store");
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
}
