//! Domain types that parse rather than trust: roles, money, order status.

pub mod customer_text;
pub mod money;
pub mod role;
pub mod status;

pub use money::Money;
pub use role::Role;
pub use status::OrderStatus;
