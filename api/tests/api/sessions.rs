//! Sessions: refresh rotation and its grace window, logout, and everything that ends every
//! session of a user at once (password change, logout everywhere, deactivation).

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_problem, test_settings};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn refreshing_rotates_the_token_and_reuse_revokes_the_family(pool: PgPool) {
    let settings = test_settings(&[("REFRESH_REUSE_GRACE_SECS", "0")]);
    let app = TestApp::start(pool, settings, false).await;
    let user = app.user(Role::Customer, "heidi").await;
    let first = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": user.refresh_token }),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let rotated: Value = first.json().await.expect("json");
    let second_token = rotated["refresh_token"].as_str().expect("token").to_owned();
    assert_ne!(second_token, user.refresh_token);
    assert_eq!(
        app.get(
            "/api/auth/me",
            rotated["access_token"].as_str().expect("token")
        )
        .await
        .status(),
        StatusCode::OK
    );

    // The spent token comes back (stolen copy): refused, and the whole family with it.
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&second_token).await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(app.refresh("made-up").await.0, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn logout_revokes_the_refresh_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "ivan").await;
    let logout = app
        .post(
            "/api/auth/logout/",
            Some(&user.token),
            json!({ "refresh_token": user.refresh_token }),
        )
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_refresh_token_no_token_could_be_is_refused_as_invalid_input(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "ivy").await;
    for token in [String::new(), "x".repeat(129)] {
        for path in ["/api/auth/logout", "/api/auth/refresh"] {
            let body = json!({ "refresh_token": token });
            let problem = assert_problem(
                app.post(path, Some(&user.token), body).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
            assert_eq!(problem["errors"][0]["field"], "refresh_token", "{path}");
        }
    }
    // Nothing was revoked: the real token still refreshes.
    assert_eq!(app.refresh(&user.refresh_token).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_deactivated_user_is_locked_out_everywhere(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let user = app.user(Role::Customer, "judy").await;
    sqlx::query("UPDATE users SET is_active = false WHERE id = $1")
        .bind(user.id)
        .execute(&pool)
        .await
        .expect("update");
    assert_problem(
        app.get("/api/auth/me", &user.token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let (status, _) = app.login("judy", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn two_refreshes_within_the_grace_window_get_the_same_pair(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "tabs").await;
    let (first, second) = tokio::join!(
        app.refresh(&user.refresh_token),
        app.refresh(&user.refresh_token)
    );
    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first.1["refresh_token"], second.1["refresh_token"]);
    assert_eq!(first.1["access_token"], second.1["access_token"]);
    // The family lives on: the shared successor rotates normally.
    let next = first.1["refresh_token"].as_str().expect("token");
    assert_eq!(app.refresh(next).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_replay_after_the_grace_window_still_revokes_the_family(pool: PgPool) {
    let settings = test_settings(&[("REFRESH_REUSE_GRACE_SECS", "1")]);
    let app = TestApp::start(pool, settings, false).await;
    let user = app.user(Role::Customer, "late-tab").await;
    let (status, rotated) = app.refresh(&user.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let successor = rotated["refresh_token"].as_str().expect("token");
    assert_eq!(app.refresh(successor).await.0, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn logout_everywhere_ends_every_access_and_refresh_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let phone = app.user(Role::Customer, "omar").await;
    let (_, laptop) = app.login("omar", PASSWORD).await;
    let laptop_token = laptop["access_token"].as_str().expect("token");
    let response = app
        .request(
            reqwest::Method::POST,
            "/api/auth/logout-all",
            Some(&phone.token),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for token in [phone.token.as_str(), laptop_token] {
        assert_problem(
            app.get("/api/auth/me", token).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let laptop_refresh = laptop["refresh_token"].as_str().expect("token");
    assert_eq!(
        app.refresh(laptop_refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&phone.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("omar", PASSWORD).await.0,
        StatusCode::OK,
        "signing in again works"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_password_change_ends_every_session_at_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "paula").await;
    let changed = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "current_password": PASSWORD, "new_password": "a-brand-new-pass" }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_problem(
        app.get("/api/auth/me", &user.token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        app.login("paula", "a-brand-new-pass").await.0,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn wrong_current_passwords_spend_the_sign_in_budget(pool: PgPool) {
    let settings = test_settings(&[("LOGIN_MAX_FAILURES", "2")]);
    let app = TestApp::start(pool, settings, false).await;
    let user = app.user(Role::Customer, "quinn").await;
    let guess = |n: u32| {
        app.put(
            "/api/users/me",
            &user.token,
            json!({ "current_password": format!("guess-{n}-x"), "new_password": "whatever-new-pass" }),
        )
    };
    assert_problem(guess(1).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_problem(guess(2).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_problem(guess(3).await, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        app.login("quinn", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the same budget guards sign-in"
    );
}
