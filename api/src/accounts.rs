//! User accounts: the stored row, its public shape, and the queries that auth, users and
//! the operator command share.

use chrono::{DateTime, Utc};
use common::domain::Role;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, unique_violation},
    validation::Violations,
};

const USERNAME_LENGTH: (usize, usize) = (3, 50);
pub const PASSWORD_LENGTH: (usize, usize) = (8, 128);

/// A row of `users`. Holds the password hash, so it is never serialized.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub full_name: Option<String>,
    pub password_hash: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped to revoke every access token issued before.
    pub token_version: i32,
    pub order_emails: bool,
}

impl User {
    pub fn subject(&self) -> crate::auth::jwt::Subject {
        crate::auth::jwt::Subject {
            id: self.id,
            role: self.role,
            token_version: self.token_version,
        }
    }
}

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub full_name: Option<String>,
    pub role: Role,
    pub is_active: bool,
    /// Whether the customer is emailed when an order is confirmed, shipped, delivered,
    /// cancelled or refunded (at the order's contact address).
    pub order_emails: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            full_name: user.full_name,
            role: user.role,
            is_active: user.is_active,
            order_emails: user.order_emails,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Columns in the order `User` reads them; a macro so queries built with `concat!`
/// stay static strings.
macro_rules! user_columns {
    () => {
        "id, email, username, full_name, password_hash, role, is_active, created_at, updated_at, token_version, order_emails"
    };
}
pub(crate) use user_columns;

pub async fn find_by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<User>> {
    sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What every authenticated request checks of the user behind its token: only the two
/// columns it needs, of an active account.
pub(crate) const CREDENTIALS_OF_SQL: &str =
    "SELECT role, token_version FROM users WHERE id = $1 AND is_active";

/// The role and token version of an active user, or `None` for an unknown or deactivated one.
pub async fn credentials_of(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<(Role, i32)>> {
    sqlx::query_as(CREDENTIALS_OF_SQL)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Finds a user by username or email, case-insensitively.
pub async fn find_by_login(conn: &mut PgConnection, login: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE lower(username) = lower($1) OR lower(email) = lower($1)"
    ))
    .bind(login.trim())
    .fetch_optional(conn)
    .await
}

/// A validated account about to be stored.
pub struct NewUser {
    pub email: String,
    pub username: String,
    pub full_name: Option<String>,
    pub password_hash: String,
    pub role: Role,
}

pub async fn insert(conn: &mut PgConnection, user: NewUser) -> Result<User, ApiError> {
    sqlx::query_as(concat!(
        "INSERT INTO users (id, email, username, full_name, password_hash, role)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        user_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(user.email.trim())
    .bind(user.username.trim())
    .bind(user.full_name.as_deref().map(str::trim))
    .bind(&user.password_hash)
    .bind(user.role)
    .fetch_one(conn)
    .await
    .map_err(map_unique)
}

/// Maps the named unique constraints of `users` to 409s; anything else passes through.
pub fn map_unique(error: sqlx::Error) -> ApiError {
    match unique_violation(&error) {
        Some("users_email_key") => {
            ApiError::conflict("email_taken", "An account with this email already exists.")
        }
        Some("users_username_key") => {
            ApiError::conflict("username_taken", "This username is already taken.")
        }
        _ => error.into(),
    }
}

/// Checks whichever profile fields are given, with the same rules everywhere (register,
/// own profile, admin edits). Usernames hold no `@`, so a login name can never be
/// mistaken for another account's email.
pub fn check_profile(
    v: &mut Violations,
    email: Option<&str>,
    username: Option<&str>,
    full_name: Option<&str>,
) {
    if let Some(email) = email {
        v.email(email.trim(), "email");
    }
    if let Some(username) = username {
        let username = username.trim();
        v.length(username, "username", USERNAME_LENGTH.0, USERNAME_LENGTH.1)
            .check(
                username
                    .chars()
                    .all(|c| c.is_alphanumeric() || "._-".contains(c)),
                "username",
                "may hold only letters, digits, '.', '_' and '-'",
            );
    }
    if let Some(name) = full_name {
        v.length(name, "full_name", 0, 255);
    }
}

/// Checks the fields of a new account, collecting every problem.
pub fn validate_new_account(
    email: &str,
    username: &str,
    password: &str,
    full_name: Option<&str>,
) -> Result<(), ApiError> {
    let mut v = Violations::new();
    check_profile(&mut v, Some(email), Some(username), full_name);
    v.length(password, "password", PASSWORD_LENGTH.0, PASSWORD_LENGTH.1);
    v.finish()
}

/// Ends every session of `user_id`: its refresh tokens are revoked and a new token version
/// invalidates every access token issued so far.
pub async fn end_all_sessions(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    crate::auth::refresh::revoke_all_for_user(conn, user_id).await
}
