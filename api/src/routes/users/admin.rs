//! User management for admins: list, search, read, change role or active flag, deactivate.

use axum::{Json, extract::State, http::StatusCode};
use common::domain::Role;
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    accounts::{self, User, UserResponse, user_columns},
    auth::{
        AdminUser,
        throttle::{AccountKey, AccountLimit},
    },
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath, AppQuery},
    pagination::{Page, PageRequest, contains_pattern, page_request},
    state::AppState,
    validation::Violations,
};

use super::load;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateUserRequest {
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    #[schema(max_length = 255)]
    pub full_name: Option<String>,
    #[schema(format = "email", max_length = 254)]
    pub email: Option<String>,
    #[schema(min_length = 3, max_length = 50, pattern = r"^[A-Za-z0-9._-]{3,50}$")]
    pub username: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsersParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
    /// Only users of this role.
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchUsersParams {
    /// 2 to 100 characters; matched case-insensitively in username, email and full name.
    #[param(min_length = 2, max_length = 100)]
    pub q: String,
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
}

#[utoipa::path(
    get, path = "/api/users", tag = "users", security(("bearer" = [])),
    params(ListUsersParams),
    responses(
        (status = 200, description = "OK", body = Page<UserResponse>),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    _: AdminUser,
    AppQuery(params): AppQuery<ListUsersParams>,
) -> ApiResult<Json<Page<UserResponse>>> {
    let page = page_request(params.page, params.size)?;
    let mut conn = state.pool.acquire().await?;
    let users = find_page(&mut conn, params.role, None, page).await?;
    Ok(Json(users.map(UserResponse::from)))
}

#[utoipa::path(
    get, path = "/api/users/search", tag = "users", security(("bearer" = [])),
    params(SearchUsersParams),
    responses(
        (status = 200, description = "OK", body = Page<UserResponse>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`q` shorter than 2 characters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search_users(
    State(state): State<AppState>,
    _: AdminUser,
    AppQuery(params): AppQuery<SearchUsersParams>,
) -> ApiResult<Json<Page<UserResponse>>> {
    let q = params.q.trim();
    Violations::new().length(q, "q", 2, 100).finish()?;
    let page = page_request(params.page, params.size)?;
    let pattern = contains_pattern(q);
    let mut conn = state.pool.acquire().await?;
    let users = find_page(&mut conn, None, Some(pattern), page).await?;
    Ok(Json(users.map(UserResponse::from)))
}

macro_rules! page_filter {
    () => {
        " WHERE ($1::user_role IS NULL OR role = $1)
          AND ($2::text IS NULL OR username ILIKE $2 OR email ILIKE $2 OR full_name ILIKE $2)"
    };
}

/// One page of users of `role` (when given) matching the ILIKE `pattern` (when given), newest first.
async fn find_page(
    conn: &mut PgConnection,
    role: Option<Role>,
    pattern: Option<String>,
    page: PageRequest,
) -> ApiResult<Page<User>> {
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*) FROM users", page_filter!()))
        .bind(role)
        .bind(&pattern)
        .fetch_one(&mut *conn)
        .await?;
    let users: Vec<User> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users",
        page_filter!(),
        " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(role)
    .bind(&pattern)
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(users, total, page))
}

#[utoipa::path(
    get, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "OK", body = UserResponse),
        (status = 403, description = "Not allowed for this role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<UserResponse>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(load(&mut conn, id).await?.into()))
}

#[utoipa::path(
    put, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = AdminUpdateUserRequest,
    responses(
        (status = 200, description = "OK", body = UserResponse),
        (status = 403, description = "Not allowed for this role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Taken email/username, or an admin demoting or deactivating themself", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<AdminUpdateUserRequest>,
) -> ApiResult<Json<UserResponse>> {
    let mut v = Violations::new();
    accounts::check_profile(
        &mut v,
        body.email.as_deref(),
        body.username.as_deref(),
        body.full_name.as_deref(),
    );
    v.finish()?;
    let demotes_self = body.role.is_some_and(|role| role != Role::Admin);
    let deactivates_self = body.is_active == Some(false);
    if id == me.id && (demotes_self || deactivates_self) {
        return Err(self_lockout());
    }
    let mut tx = state.pool.begin().await?;
    let before = load_for_update(&mut tx, id).await?;
    let user: User = sqlx::query_as(concat!(
        "UPDATE users SET role = COALESCE($2, role), is_active = COALESCE($3, is_active),
             full_name = COALESCE($4, full_name), email = COALESCE($5, email),
             username = COALESCE($6, username), updated_at = now()
         WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(id)
    .bind(body.role)
    .bind(body.is_active)
    .bind(body.full_name.as_deref().map(str::trim))
    .bind(body.email.as_deref().map(str::trim))
    .bind(body.username.as_deref().map(str::trim))
    .fetch_one(&mut *tx)
    .await
    .map_err(accounts::map_unique)?;
    if user.role != before.role || (before.is_active && !user.is_active) {
        // Tokens carry the role they were issued for: a new role or a deactivation ends them.
        accounts::end_all_sessions(&mut tx, id).await?;
    }
    tx.commit().await?;
    tracing::info!(target_user = %id, role = ?body.role, is_active = ?body.is_active, "user updated by admin");
    Ok(Json(user.into()))
}

/// The user's row, locked until the transaction ends so the comparison with the update holds.
async fn load_for_update(conn: &mut PgConnection, id: Uuid) -> ApiResult<User> {
    sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound("No such user."))
}

fn self_lockout() -> ApiError {
    ApiError::conflict(
        "self_lockout",
        "An admin cannot demote or deactivate their own account; ask another admin.",
    )
}

#[utoipa::path(
    delete, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Deactivated (the account is kept for its orders)", body = UserResponse),
        (status = 403, description = "Not allowed for this role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin deactivating themself", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deactivate_user(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<UserResponse>> {
    if id == me.id {
        return Err(self_lockout());
    }
    let mut tx = state.pool.begin().await?;
    let user: User = sqlx::query_as(concat!(
        "UPDATE users SET is_active = false, updated_at = now() WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("No such user."))?;
    accounts::end_all_sessions(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(target_user = %id, "user deactivated by admin");
    Ok(Json(user.into()))
}

#[utoipa::path(
    delete, path = "/api/users/{id}/login-lockout", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "The account's failed sign-in attempts are forgotten; it may sign in at once"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn clear_login_lockout(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let mut conn = state.pool.acquire().await?;
    load(&mut conn, id).await?;
    AccountLimit::clear(&mut conn, AccountKey::User(id)).await?;
    tracing::info!(target_user = %id, "login lockout cleared by admin");
    Ok(StatusCode::NO_CONTENT)
}
