//! Work that must not stop halfway because a client hung up.
//!
//! axum drops a handler's future when the client disconnects. For a write that commits
//! and then records more (an idempotency key, a rotated token), being cut off between the
//! two is worse than finishing unheard, so such handlers run their write on its own task.

use std::future::Future;

use tracing::Instrument;

use crate::error::{ApiError, ApiResult};

/// Runs `work` to completion on its own task (in the request's span) and returns its result.
pub async fn detached<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("request task failed: {e}")))?
}
