//! Domain types that parse rather than trust: roles, money, order status, payments, parcels.

pub mod customer_text;
pub mod fulfillment;
pub mod money;
pub mod payment;
pub mod role;
pub mod status;

pub use fulfillment::FulfillmentStatus;
pub use money::Money;
pub use payment::{Payment, PaymentStatus};
pub use role::{ActorKind, Role};
pub use status::OrderStatus;
