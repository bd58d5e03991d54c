//! Live order updates: the hub that turns the feed's events on the broker into one ordered
//! broadcast per process, the bounds on open streams, and the tickets browsers open
//! streams with. The streams themselves are routes (`routes::orders::stream`).

pub mod hub;
pub mod slots;
pub mod tickets;

pub use hub::Hub;
pub use slots::{Refusal, StreamSlot, StreamSlots};
