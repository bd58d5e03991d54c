//! Registration, login, tokens and their abuse.

use common::domain::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_problem, database_url};

fn registration(username: &str) -> Value {
    json!({ "email": format!("{username}@example.com"), "username": username, "password": PASSWORD })
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn registering_creates_a_customer_without_exposing_the_password(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .post("/api/auth/register/", None, registration("alice"))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["role"], "customer");
    assert_eq!(body["is_active"], true);
    assert!(body.get("password_hash").is_none() && body.get("password").is_none());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn registering_with_a_role_is_refused_and_creates_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut body = registration("mallory");
    body["role"] = json!("admin");
    let problem = assert_problem(
        app.post("/api/auth/register", None, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "role");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("role")
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(users, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn invalid_registration_fields_are_all_named(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({ "email": "not-an-email", "username": "ab", "password": "short" });
    let problem = assert_problem(
        app.post("/api/auth/register", None, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    for field in ["email", "username", "password"] {
        assert!(fields.contains(&field), "{field} missing from {problem}");
    }
    let long = json!({ "email": "x@example.com", "username": "u".repeat(51), "password": "p".repeat(129) });
    let problem = assert_problem(
        app.post("/api/auth/register", None, long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"].as_array().expect("errors").len(), 2);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn duplicate_email_or_username_is_a_conflict_regardless_of_case(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(
        app.post("/api/auth/register", None, registration("bob"))
            .await
            .status(),
        StatusCode::CREATED
    );
    let same_email =
        json!({ "email": "BOB@example.com", "username": "bobby", "password": PASSWORD });
    let problem = assert_problem(
        app.post("/api/auth/register", None, same_email).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "email_taken");
    let same_username =
        json!({ "email": "other@example.com", "username": "BOB", "password": PASSWORD });
    let problem = assert_problem(
        app.post("/api/auth/register", None, same_username).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "username_taken");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = format!("{}/api/auth/register", app.address);
    let broken = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .expect("sent");
    assert_problem(broken, StatusCode::BAD_REQUEST).await;
    let text = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("sent");
    assert_problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let wrong_type = json!({ "email": 5, "username": "carol", "password": PASSWORD });
    let problem = assert_problem(
        app.post("/api/auth/register", None, wrong_type).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "email");
    let huge = "x".repeat(app.settings().http.body_limit_bytes + 1);
    let oversized = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    assert_problem(oversized, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn login_works_with_username_email_or_the_oauth2_form(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "dave").await;
    let (status, body) = app.login(&user.email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["user"]["username"], "dave");
    assert!(body["expires_in"].as_u64().expect("seconds") > 0);

    let by_email_field = app
        .post(
            "/api/auth/login",
            None,
            json!({ "email": user.email, "password": PASSWORD }),
        )
        .await;
    assert_eq!(by_email_field.status(), StatusCode::OK);

    let form = app
        .client
        .post(format!("{}/api/auth/login", app.address))
        .form(&[
            ("grant_type", "password"),
            ("username", "dave"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(form.status(), StatusCode::OK);
    let token: Value = form.json().await.expect("json");
    assert_eq!(
        app.get(
            "/api/auth/me",
            token["access_token"].as_str().expect("token")
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_user_and_wrong_password_answer_alike(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.user(Role::Customer, "erin").await;
    let wrong_password = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "erin", "password": "nope-nope-nope" }),
        )
        .await;
    let unknown_user = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "nobody", "password": "nope-nope-nope" }),
        )
        .await;
    let a = assert_problem(wrong_password, StatusCode::UNAUTHORIZED).await;
    let b = assert_problem(unknown_user, StatusCode::UNAUTHORIZED).await;
    assert_eq!(a, b);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn me_requires_a_valid_bearer_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "frank").await;
    let me: Value = app
        .get("/api/auth/me", &user.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["id"], user.id.to_string());

    let missing = app.request(Method::GET, "/api/auth/me", None, None).await;
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer")
    );
    assert_problem(missing, StatusCode::UNAUTHORIZED).await;
    let garbage = app.get("/api/auth/me", "not.a.jwt").await;
    assert_problem(garbage, StatusCode::UNAUTHORIZED).await;
}

/// Signs arbitrary claims with `secret`.
fn forge(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn tampered_expired_foreign_or_incomplete_tokens_are_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "grace").await;
    let settings = app.settings();
    let secret = settings.auth.secret_key.expose();
    let now = chrono::Utc::now().timestamp();
    let valid = json!({
        "sub": user.id, "role": "admin", "iat": now, "exp": now + 600,
        "iss": settings.auth.issuer, "aud": settings.auth.audience, "jti": uuid::Uuid::now_v7(),
        "ver": 0,
    });
    // The forged claims themselves are accepted when signed with the right key…
    assert_eq!(
        app.get("/api/auth/me", &forge(&valid, secret))
            .await
            .status(),
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "wrong signing key",
        forge(&valid, "another-secret-entirely-another-secret"),
    ));
    let mut tampered = user.token.clone();
    tampered.pop();
    tampered.push(if user.token.ends_with('A') { 'B' } else { 'A' });
    cases.push(("bad signature", tampered));
    let payload = user.token.split('.').nth(1).expect("payload").to_owned();
    cases.push((
        "alg none",
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
    ));
    for (name, field, value) in [
        ("expired", "exp", json!(now - 3600)),
        ("wrong audience", "aud", json!("someone-else")),
        ("wrong issuer", "iss", json!("someone-else")),
        ("exp as a string", "exp", json!("9999999999")),
    ] {
        let mut claims = valid.clone();
        claims[field] = value;
        cases.push((name, forge(&claims, secret)));
    }
    for missing in ["exp", "iat", "sub", "aud", "iss"] {
        let mut claims = valid.clone();
        claims.as_object_mut().expect("object").remove(missing);
        cases.push((missing, forge(&claims, secret)));
    }
    for (name, token) in cases {
        let response = app.get("/api/auth/me", &token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_operator_command_creates_the_first_admin(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let url = database_url(&pool);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .args([
            "create-user",
            "--role",
            "admin",
            "--email",
            "root@example.com",
            "--username",
            "root",
        ])
        .env("DATABASE_URL", url)
        .env("ADMIN_PASSWORD", PASSWORD)
        .output()
        .expect("api runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, body) = app.login("root", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user"]["role"], "admin");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn repeated_failed_logins_are_rate_limited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.user(Role::Customer, "kim").await;
    let limit = app.settings().auth.login_max_failures;
    for _ in 0..limit {
        assert_eq!(
            app.login("kim", "wrong-password").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let blocked = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "KIM", "password": PASSWORD }),
        )
        .await;
    assert!(blocked.headers().contains_key("retry-after"));
    assert_problem(blocked, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        app.login("someone-else", "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );
}
