//! `/api/users`: a user's own profile, and user management for admins.

use sqlx::PgConnection;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{self, USERNAME_LENGTH, User},
    error::{ApiError, ApiResult},
    state::AppState,
    validation::Violations,
};

mod admin;
mod me;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::get_me, me::update_me))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::search_users))
        .routes(routes!(
            admin::get_user,
            admin::update_user,
            admin::deactivate_user
        ))
}

/// Changes to one's own profile. Role and active flag are not here: only admins set them.
pub(super) fn validate_profile(
    v: &mut Violations,
    email: Option<&str>,
    username: Option<&str>,
    full_name: Option<&str>,
) {
    if let Some(email) = email {
        v.email(email.trim(), "email");
    }
    if let Some(username) = username {
        v.length(
            username.trim(),
            "username",
            USERNAME_LENGTH.0,
            USERNAME_LENGTH.1,
        );
    }
    if let Some(name) = full_name {
        v.length(name, "full_name", 0, 255);
    }
}

pub(super) async fn load(conn: &mut PgConnection, id: Uuid) -> ApiResult<User> {
    accounts::find_by_id(conn, id)
        .await?
        .ok_or(ApiError::NotFound("No such user."))
}
