//! The `CurrentUser` extractor: a valid bearer token of an active user, or 401.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use common::domain::Role;
use uuid::Uuid;

use crate::{accounts, error::ApiError, state::AppState};

/// The authenticated caller. Role, active flag and token version are read from the
/// database on every request, so a deactivation, role change, password change or logout
/// everywhere takes effect at once.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub role: Role,
    /// The token version the caller's credentials carry; signing out everywhere or a new
    /// password moves the user's on, voiding them.
    pub token_version: i32,
}

const BAD_TOKEN: &str = "A valid bearer token is required.";

impl CurrentUser {
    pub fn require_staff(&self) -> Result<(), ApiError> {
        if self.role.is_staff() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "Only a vendor or an admin may do this.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(ApiError::Unauthorized(BAD_TOKEN))?;
        let claims = state
            .jwt
            .verify(token)
            .ok_or(ApiError::Unauthorized(BAD_TOKEN))?;
        let mut conn = state.pool.acquire().await?;
        let (role, token_version) = accounts::credentials_of(&mut conn, claims.sub)
            .await?
            .filter(|&(_, version)| version == claims.ver)
            .ok_or(ApiError::Unauthorized(BAD_TOKEN))?;
        tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
        Ok(CurrentUser {
            id: claims.sub,
            role,
            token_version,
        })
    }
}

/// A signed-in vendor or admin. As an extractor it refuses everyone else with 403 before
/// the query or body is even read, so a customer learns nothing about a staff route.
pub struct StaffUser(pub CurrentUser);

impl FromRequestParts<AppState> for StaffUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_staff()?;
        Ok(StaffUser(user))
    }
}

/// A signed-in admin; everyone else gets 403 before the query or body is read.
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden("Only an admin may do this."));
        }
        Ok(AdminUser(user))
    }
}
