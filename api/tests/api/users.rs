//! Own profile and admin user management, with every role trying every admin route.

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_problem};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_user_reads_and_updates_their_own_profile(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "kate").await;
    let me: Value = app
        .get("/api/users/me/", &user.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["username"], "kate");
    let updated = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "full_name": "Kate K", "email": "kate@new.example" }),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let body: Value = updated.json().await.expect("json");
    assert_eq!(body["full_name"], "Kate K");
    assert_eq!(body["email"], "kate@new.example");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_user_cannot_grant_themself_a_role_or_reactivate(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let user = app.user(Role::Customer, "leo").await;
    for escalation in [
        json!({ "role": "admin" }),
        json!({ "is_active": true }),
        json!({ "full_name": "x", "role": "vendor" }),
    ] {
        assert_problem(
            app.put("/api/users/me", &user.token, escalation).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let role: Role = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&pool)
        .await
        .expect("role");
    assert_eq!(role, Role::Customer);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn changing_the_password_needs_the_current_one_and_ends_other_sessions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.user(Role::Customer, "mia").await;
    let without = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "new_password": "brand-new-password" }),
        )
        .await;
    assert_problem(without, StatusCode::UNPROCESSABLE_ENTITY).await;
    let wrong = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "new_password": "brand-new-password", "current_password": "wrong-password" }),
        )
        .await;
    assert_problem(wrong, StatusCode::UNPROCESSABLE_ENTITY).await;
    // An empty current password is invalid input on its own, not an update that changes nothing.
    let empty = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "current_password": "" }),
        )
        .await;
    let problem = assert_problem(empty, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "current_password");
    let right = app
        .put(
            "/api/users/me",
            &user.token,
            json!({ "new_password": "brand-new-password", "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(app.login("mia", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("mia", "brand-new-password").await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn profile_changes_keep_usernames_unique(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.user(Role::Customer, "nina").await;
    let other = app.user(Role::Customer, "omar").await;
    let taken = app
        .put("/api/users/me", &other.token, json!({ "username": "NINA" }))
        .await;
    assert_eq!(
        assert_problem(taken, StatusCode::CONFLICT).await["code"],
        "username_taken"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_and_vendors_get_403_on_every_admin_route(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let customer = app.user(Role::Customer, "pat").await;
    let vendor = app.user(Role::Vendor, "quinn").await;
    let target = customer.id;
    for user in [&customer, &vendor] {
        let token = user.token.as_str();
        let responses = [
            app.get("/api/users", token).await,
            app.get("/api/users/search?q=pa", token).await,
            app.get(&format!("/api/users/{target}"), token).await,
            app.put(
                &format!("/api/users/{target}"),
                token,
                json!({ "role": "admin" }),
            )
            .await,
            app.delete(&format!("/api/users/{target}"), token).await,
        ];
        for response in responses {
            assert_problem(response, StatusCode::FORBIDDEN).await;
        }
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn admins_list_users_by_page_and_role(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    for name in ["c1", "c2", "c3"] {
        app.user(Role::Customer, &format!("user{name}")).await;
    }
    app.user(Role::Vendor, "vendor1").await;
    let page: Value = app
        .get("/api/users/?page=1&size=2", &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 5);
    assert_eq!(page["pages"], 3);
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["items"][0]["username"], "vendor1", "newest first");
    let vendors: Value = app
        .get("/api/users?role=vendor", &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(vendors["total"], 1);
    assert_problem(
        app.get("/api/users?size=101", &admin.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        app.get("/api/users?page=0", &admin.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        app.get("/api/users?role=king", &admin.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn admins_search_users_case_insensitively(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    app.user(Role::Customer, "Roberta").await;
    app.user(Role::Customer, "sam").await;
    let found: Value = app
        .get("/api/users/search?q=ROBE", &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["username"], "Roberta");
    let by_full_name: Value = app
        .get("/api/users/search?q=sam%20tester", &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_full_name["total"], 1);
    let wildcard: Value = app
        .get("/api/users/search?q=%25%25", &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(wildcard["total"], 0, "LIKE wildcards are matched literally");
    assert_problem(
        app.get("/api/users/search?q=r", &admin.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn admins_promote_and_deactivate_users(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    let user = app.user(Role::Customer, "tina").await;
    let path = format!("/api/users/{}", user.id);
    let fetched: Value = app
        .get(&path, &admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["username"], "tina");

    let promoted: Value = app
        .put(&path, &admin.token, json!({ "role": "vendor" }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(promoted["role"], "vendor");
    // Tokens were issued for the old role: they end at once, and a new sign-in carries the new one.
    assert_problem(
        app.get("/api/auth/me", &user.token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let (status, signed_in) = app.login("tina", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(signed_in["user"]["role"], "vendor");

    let deactivated = app.delete(&path, &admin.token).await;
    assert_eq!(deactivated.status(), StatusCode::OK);
    assert_eq!(
        deactivated.json::<Value>().await.expect("json")["is_active"],
        false
    );
    assert_problem(
        app.get("/api/auth/me", &user.token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        app.refresh(&user.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );

    let reactivated = app
        .put(&path, &admin.token, json!({ "is_active": true }))
        .await;
    assert_eq!(reactivated.status(), StatusCode::OK);
    assert_eq!(app.login("tina", PASSWORD).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_admin_cannot_lock_themself_out(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    let path = format!("/api/users/{}", admin.id);
    assert_problem(
        app.put(&path, &admin.token, json!({ "role": "customer" }))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        app.put(&path, &admin.token, json!({ "is_active": false }))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(app.delete(&path, &admin.token).await, StatusCode::CONFLICT).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_or_malformed_user_ids_are_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    assert_problem(
        app.get(
            &format!("/api/users/{}", uuid::Uuid::now_v7()),
            &admin.token,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.get("/api/users/not-a-uuid", &admin.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_username_can_never_take_the_shape_of_an_email(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "root").await;
    let victim = app.user(Role::Customer, "victim").await;
    let mallory = app.user(Role::Customer, "mallory").await;
    // Taking the victim's email as a username would shadow their login by email.
    let shadow = json!({ "username": victim.email });
    let own = app
        .put("/api/users/me", &mallory.token, shadow.clone())
        .await;
    assert_eq!(
        assert_problem(own, StatusCode::UNPROCESSABLE_ENTITY).await["errors"][0]["field"],
        "username"
    );
    let by_admin = app
        .put(&format!("/api/users/{}", mallory.id), &admin.token, shadow)
        .await;
    assert_problem(by_admin, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.login(&victim.email, PASSWORD).await.0, StatusCode::OK);
}
