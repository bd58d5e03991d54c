//! Placeholder replaced by the consumer.
