//! Authentication: password hashing, access tokens (JWT), refresh tokens and the
//! `CurrentUser` extractor that guards every protected route.

mod current_user;
pub mod jwt;
pub mod password;
pub mod refresh;
pub mod throttle;

pub use current_user::CurrentUser;
