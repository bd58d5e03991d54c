//! Authentication: password hashing, access tokens (JWT), refresh tokens and the
//! `CurrentUser` extractor that guards every protected route.

mod client_ip;
mod current_user;
pub mod ip_limit;
pub mod jwt;
pub mod password;
pub mod refresh;
pub mod throttle;

pub use client_ip::ClientIp;
pub use current_user::{AdminUser, CurrentUser, StaffUser};
