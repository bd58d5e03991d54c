//! `/api/auth`: register, login and me; `session` holds refresh, logout and logout
//! everywhere; `ticket` the tickets live streams are opened with from a browser. Every answer here carries `Cache-Control: no-store` (see `middleware`).

mod session;
mod ticket;

use axum::{
    extract::{FromRequest, Request, State},
    http::StatusCode,
};
use common::domain::Role;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    accounts::{self, NewUser, PASSWORD_LENGTH, UserResponse},
    auth::{
        ClientIp, CurrentUser, password,
        throttle::{AccountKey, AccountLimit},
    },
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, has_content_type, parse_json, read_body},
    state::AppState,
};
use session::TokenResponse;

/// The longest login name looked at; an email address is at most 254 characters.
pub const MAX_LOGIN_LENGTH: usize = 254;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(session::refresh_tokens))
        .routes(routes!(session::logout))
        .routes(routes!(session::logout_everywhere))
        .routes(routes!(ticket::stream_ticket))
}

/// A new customer account. There is no `role`: self-registration always makes a customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(min_length = 3, max_length = 50, pattern = r"^[A-Za-z0-9._-]{3,50}$")]
    pub username: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[schema(max_length = 255)]
    pub full_name: Option<String>,
}

/// Credentials: `username` may also hold the email; or send `email` instead.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 254)]
    pub username: Option<String>,
    #[schema(min_length = 1, max_length = 254)]
    pub email: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
}

/// The OAuth2 password-grant form sent by the docs' Authorize button.
#[derive(Debug, Deserialize)]
struct OAuth2PasswordForm {
    username: String,
    password: String,
}

#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email or username taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input, or a `role` field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    AppJson(body): AppJson<RegisterRequest>,
) -> ApiResult<(StatusCode, axum::Json<UserResponse>)> {
    // Limited per address before anything else: a taken email answers 409, so this
    // limit is what keeps account enumeration slow.
    state.guards.register_per_ip.check(client)?;
    accounts::validate_new_account(
        &body.email,
        &body.username,
        &body.password,
        body.full_name.as_deref(),
    )?;
    let password_hash = state.guards.passwords.hash(body.password).await?;
    let mut conn = state.pool.acquire().await?;
    let user = accounts::insert(
        &mut conn,
        NewUser {
            email: body.email,
            username: body.username,
            full_name: body.full_name,
            password_hash,
            role: Role::Customer,
        },
    )
    .await?;
    tracing::info!(user_id = %user.id, "customer registered");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Login credentials from a JSON body or an OAuth2 password form.
pub struct Credentials {
    login: String,
    password: String,
}

impl<S: Send + Sync> FromRequest<S> for Credentials {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers().clone();
        if has_content_type(&headers, "application/x-www-form-urlencoded") {
            let body = read_body(request, state).await?;
            let form: OAuth2PasswordForm = serde_urlencoded_from(&body)?;
            return Credentials {
                login: form.username,
                password: form.password,
            }
            .bounded();
        }
        if !has_content_type(&headers, "application/json") {
            return Err(ApiError::UnsupportedMediaType(
                "Send JSON or an application/x-www-form-urlencoded OAuth2 form.",
            ));
        }
        let body: LoginRequest = parse_json(&read_body(request, state).await?)?;
        let login = body
            .username
            .or(body.email)
            .ok_or_else(|| ApiError::invalid("username", "username or email is required"))?;
        Credentials {
            login,
            password: body.password,
        }
        .bounded()
    }
}

impl Credentials {
    /// Refuses names and passwords longer than any account can have, before they cost a
    /// lookup, a row in the attempt table or a hash.
    fn bounded(self) -> Result<Self, ApiError> {
        if self.login.trim().is_empty() || self.login.chars().count() > MAX_LOGIN_LENGTH {
            return Err(ApiError::invalid(
                "username",
                format!("must be 1 to {MAX_LOGIN_LENGTH} characters"),
            ));
        }
        if self.password.is_empty() || self.password.chars().count() > PASSWORD_LENGTH.1 {
            return Err(ApiError::invalid(
                "password",
                format!("must be 1 to {} characters", PASSWORD_LENGTH.1),
            ));
        }
        Ok(self)
    }
}

fn serde_urlencoded_from<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| ApiError::invalid("form", e.to_string()))
}

const BAD_CREDENTIALS: &str = "Incorrect username or password.";

#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body(content(
        (LoginRequest = "application/json"),
        (LoginRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong credentials or inactive account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts for this account or from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    credentials: Credentials,
) -> ApiResult<axum::Json<TokenResponse>> {
    state.guards.login_per_ip.check(client)?;
    let mut conn = state.pool.acquire().await?;
    let user = accounts::find_by_login(&mut conn, &credentials.login).await?;
    // The attempt is counted before the slow check, so parallel guesses all spend budget.
    let key = user
        .as_ref()
        .map_or(AccountKey::UnknownName(&credentials.login), |u| {
            AccountKey::User(u.id)
        });
    state.guards.accounts.reserve(&mut conn, key).await?;
    drop(conn);
    // Verify against a stand-in hash for unknown users so both failures cost the same.
    let stored = user.as_ref().map_or_else(
        || password::UNKNOWN_ACCOUNT_HASH.to_owned(),
        |u| u.password_hash.clone(),
    );
    let matches = state
        .guards
        .passwords
        .verify(credentials.password, stored)
        .await?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        _ => {
            metrics::counter!("orderflow_login_failures_total").increment(1);
            return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
        }
    };
    let mut tx = state.pool.begin().await?;
    AccountLimit::clear(&mut tx, AccountKey::User(user.id)).await?;
    let response = session::open_session(&state, &mut tx, user).await?;
    tx.commit().await?;
    Ok(axum::Json(response))
}

#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<axum::Json<UserResponse>> {
    let mut conn = state.pool.acquire().await?;
    let user = accounts::find_by_id(&mut conn, user.id)
        .await?
        .ok_or(ApiError::Unauthorized("A valid bearer token is required."))?;
    Ok(axum::Json(user.into()))
}
