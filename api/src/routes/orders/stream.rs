//! Live order updates over Server-Sent Events: `GET /api/orders/stream` (a customer's own
//! orders; every order for staff, optionally of one status) and `GET /api/orders/{id}/stream`.
//!
//! Each applied transition, stall and resumption is an event whose `id:` is its number in
//! the feed. A client that reconnects with `Last-Event-ID` (or `?since=`) gets what it
//! missed from the database, then the live events, with no gap and no repeat: it subscribes
//! to the hub before it reads, and the feed is numbered in commit order. A client that falls
//! more than the hub's buffer behind is sent `lagged` and closed, to resume the same way.
//! Every stream ends when the server shuts down, so a graceful stop never waits for one.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderMap, HeaderName, HeaderValue, request::Parts},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use common::{
    domain::{OrderStatus, customer_text},
    feed::{self, FeedEntry, FeedKind},
};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::model::find_visible;
use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppPath, AppQuery},
    live::{Refusal, StreamSlot, tickets},
    state::AppState,
};

/// Rows read per query while replaying.
const REPLAY_PAGE: i64 = 200;
/// A comment this often keeps proxies and load balancers from closing an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Replay the events after this id, then continue live (what `Last-Event-ID` does; the
    /// header wins when both are sent). Without either, the stream starts from now.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Only events that leave an order in this status.
    status: Option<OrderStatus>,
    /// A ticket from `POST /api/auth/stream-ticket`, for clients that cannot send an
    /// `Authorization` header (a browser's `EventSource`). Good once, for 60 seconds.
    #[allow(dead_code)] // read by `StreamUser`; declared here so it is documented and allowed
    ticket: Option<String>,
}

/// One event of a stream (its `data:`). Fields marked *staff only* are absent for customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderUpdate {
    /// The event's number in the feed (also its SSE `id:`).
    pub id: i64,
    /// `status_changed` or `payment_changed`; for staff also `stalled` and `resumed` (also
    /// its SSE `event:`).
    pub kind: String,
    pub order_id: Uuid,
    pub from_status: Option<OrderStatus>,
    pub status: OrderStatus,
    pub tracking_number: Option<String>,
    /// What happened, in words meant for whoever is watching.
    pub message: String,
    /// Staff see `customer`, `vendor`, `admin` or `system`; customers see `customer`,
    /// `store` or `system`.
    pub actor_role: String,
    /// *Staff only*.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// *Staff only*: the note with a transition, or why the order stalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The caller, from a bearer token or, failing that, a stream ticket in the query.
pub struct StreamUser(CurrentUser);

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Ticket {
            ticket: Option<String>,
        }
        let ticket = serde_urlencoded::from_str::<Ticket>(parts.uri.query().unwrap_or(""))
            .ok()
            .and_then(|query| query.ticket);
        match ticket {
            Some(ticket)
                if !parts
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION) =>
            {
                let mut conn = state.pool.acquire().await?;
                let user =
                    tickets::redeem(&mut conn, &ticket)
                        .await?
                        .ok_or(ApiError::Unauthorized(
                            "The stream ticket is unknown, used or expired; ask for a new one.",
                        ))?;
                tracing::Span::current().record("user_id", tracing::field::display(user.id));
                Ok(StreamUser(user))
            }
            _ => CurrentUser::from_request_parts(parts, state)
                .await
                .map(StreamUser),
        }
    }
}

#[utoipa::path(
    get, path = "/api/orders/stream", tag = "orders", security(("bearer" = [])),
    params(StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "`text/event-stream` of `OrderUpdate` events: a customer's own \
            orders, every order for staff. Starts with a `ready` event whose id is where it \
            resumes from; heartbeat comments every 15 s", body = OrderUpdate, content_type = "text/event-stream"),
        (status = 401, description = "No valid token or ticket", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `since`, `status` or `Last-Event-ID`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This user has as many streams open as allowed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server has as many streams open as it allows", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream_orders(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    AppQuery(params): AppQuery<StreamParams>,
) -> ApiResult<Response> {
    let since = resume_point(&headers, params.since)?;
    open(state, &user, View::new(&user, None, params.status), since).await
}

#[utoipa::path(
    get, path = "/api/orders/{id}/stream", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path), StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "`text/event-stream` of the order's `OrderUpdate` events, \
            as `GET /api/orders/stream` sends them", body = OrderUpdate, content_type = "text/event-stream"),
        (status = 401, description = "No valid token or ticket", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `since`, `status` or `Last-Event-ID`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This user has as many streams open as allowed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server has as many streams open as it allows", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream_order(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppQuery(params): AppQuery<StreamParams>,
) -> ApiResult<Response> {
    let since = resume_point(&headers, params.since)?;
    let order = find_visible(&mut *state.pool.acquire().await?, id, &user).await?;
    let view = View::new(&user, Some(order.id), params.status);
    open(state, &user, view, since).await
}

/// Where to resume: `Last-Event-ID` or `since`, or `None` for "from now".
fn resume_point(headers: &HeaderMap, since: Option<i64>) -> ApiResult<Option<i64>> {
    let header = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be an event id"))?,
        ),
        None => None,
    };
    if since.is_some_and(|id| id < 0) {
        return Err(ApiError::invalid(
            "since",
            "must be an event id (0 or more)",
        ));
    }
    Ok(header.or(since))
}

async fn open(
    state: AppState,
    user: &CurrentUser,
    view: View,
    since: Option<i64>,
) -> ApiResult<Response> {
    let slot = state
        .streams
        .take(user.id)
        .map_err(|refusal| match refusal {
            Refusal::UserLimit => ApiError::TooManyRequests {
                retry_after_secs: 5,
            },
            Refusal::ProcessLimit => ApiError::Unavailable(
                "This server holds as many live streams as it can; retry shortly.",
            ),
        })?;
    let (receiver, now) = state.hub.subscribe(&state.pool).await?;
    let start = since.unwrap_or(now);
    let ready = Event::default()
        .event("ready")
        .id(start.to_string())
        .retry(RECONNECT_AFTER)
        .data(format!(r#"{{"after":{start}}}"#));
    let recheck = state.settings.http.stream_recheck;
    let follower = Follower {
        pool: state.pool.clone(),
        viewer: user.clone(),
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + recheck, recheck),
        receiver,
        cursor: start,
        replaying: since.is_some(),
        ended: false,
        view,
        _slot: slot,
    };
    let events = stream::once(async { vec![ready] })
        .chain(stream::unfold(follower, |mut follower| async move {
            let events = follower.next_events().await?;
            Some((events, follower))
        }))
        .flat_map(stream::iter)
        .map(Ok::<_, Infallible>)
        .take_until(state.streams_end.clone().cancelled_owned());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    // nginx and its kind buffer responses unless told not to.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// What one stream shows.
struct View {
    /// A customer sees their own orders' status changes only.
    customer: Option<Uuid>,
    order_id: Option<Uuid>,
    status: Option<OrderStatus>,
}

impl View {
    fn new(viewer: &CurrentUser, order_id: Option<Uuid>, status: Option<OrderStatus>) -> Self {
        Self {
            customer: (!viewer.role.is_staff()).then_some(viewer.id),
            order_id,
            status,
        }
    }

    /// The rows a replay reads (what `shows` then narrows down).
    fn scope(&self) -> feed::Scope {
        match (self.order_id, self.customer) {
            (Some(order), _) => feed::Scope::Order(order),
            (None, Some(customer)) => feed::Scope::Customer(customer),
            (None, None) => feed::Scope::Everything,
        }
    }

    fn shows(&self, entry: &FeedEntry) -> bool {
        self.customer
            .is_none_or(|customer| entry.customer_id == customer && entry.kind.shown_to_customers())
            && self.order_id.is_none_or(|order| entry.order_id == order)
            && self.status.is_none_or(|status| entry.status == status)
    }

    fn event(&self, entry: &FeedEntry) -> Option<Event> {
        if !self.shows(entry) {
            return None;
        }
        let staff = self.customer.is_none();
        let message = match entry.kind {
            FeedKind::StatusChanged => customer_text::status_sentence(
                entry.status,
                entry.reason.as_deref(),
                &entry.actor_role,
            )
            .to_owned(),
            FeedKind::Stalled => {
                "The order stopped moving; staff must re-drive or skip its next command.".to_owned()
            }
            FeedKind::Resumed => "The order is moving again.".to_owned(),
            // The worker wrote it for the customer: amounts, never a staff note.
            FeedKind::PaymentChanged | FeedKind::FulfillmentChanged | FeedKind::UnitsCancelled => {
                entry.reason.clone().unwrap_or_default()
            }
        };
        let update = OrderUpdate {
            id: entry.id,
            kind: entry.kind.as_str().to_owned(),
            order_id: entry.order_id,
            from_status: entry.from_status,
            status: entry.status,
            tracking_number: entry.tracking_number.clone(),
            message,
            actor_role: if staff {
                entry.actor_role.clone()
            } else {
                customer_text::actor_label(&entry.actor_role).to_owned()
            },
            customer_id: staff.then_some(entry.customer_id),
            reason: entry.reason.clone().filter(|_| staff),
            occurred_at: entry.created_at,
        };
        Event::default()
            .id(entry.id.to_string())
            .event(entry.kind.as_str())
            .json_data(update)
            .ok()
    }
}

/// One stream's position: it replays from the database, then follows the hub.
struct Follower {
    pool: PgPool,
    viewer: CurrentUser,
    /// When to check again that the viewer may still watch.
    recheck: tokio::time::Interval,
    receiver: Receiver<Arc<FeedEntry>>,
    /// The newest entry this stream has passed (shown or not).
    cursor: i64,
    replaying: bool,
    ended: bool,
    view: View,
    _slot: StreamSlot,
}

impl Follower {
    /// The next events to send; `None` ends the stream.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.ended {
            return None;
        }
        while self.replaying {
            let page = self.replay_page().await?;
            self.replaying = page.len() as i64 == REPLAY_PAGE;
            let events: Vec<Event> = page
                .iter()
                .filter_map(|entry| {
                    self.cursor = entry.id;
                    self.view.event(entry)
                })
                .collect();
            if !events.is_empty() {
                return Some(events);
            }
        }
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.recheck.tick() => {
                    if self.may_still_watch().await {
                        continue;
                    }
                    self.ended = true;
                    let revoked = Event::default().event("revoked").data(
                        r#"{"detail":"This account may no longer watch these orders; sign in again."}"#,
                    );
                    return Some(vec![revoked]);
                }
            };
            match received {
                Ok(entry) if entry.id > self.cursor => {
                    self.cursor = entry.id;
                    if let Some(event) = self.view.event(&entry) {
                        return Some(vec![event]);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a live stream fell behind; closing it");
                    metrics::counter!("orderflow_live_lagged_total").increment(1);
                    self.ended = true;
                    let lagged = Event::default().event("lagged").data(
                        r#"{"detail":"This stream fell behind; reconnect with Last-Event-ID to resume."}"#,
                    );
                    return Some(vec![lagged]);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Whether the viewer is still active, with the role and token version the stream was
    /// opened with (a deactivation, role change or sign-out everywhere ends it). A database
    /// that does not answer ends it too: the client resumes once it does.
    async fn may_still_watch(&self) -> bool {
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT is_active AND role = $2 AND token_version = $3 FROM users WHERE id = $1",
        )
        .bind(self.viewer.id)
        .bind(self.viewer.role)
        .bind(self.viewer.token_version)
        .fetch_optional(&self.pool)
        .await;
        matches!(check, Ok(Some(true)))
    }

    async fn replay_page(&self) -> Option<Vec<FeedEntry>> {
        let read = async {
            let mut conn = self.pool.acquire().await?;
            feed::after(
                &mut conn,
                self.cursor,
                i64::MAX,
                self.view.scope(),
                REPLAY_PAGE,
            )
            .await
        };
        match read.await {
            Ok(page) => Some(page),
            Err(error) => {
                // The client resumes from its last event once the database answers again.
                tracing::warn!(%error, "cannot replay a live stream; closing it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast;

    use super::*;
    use crate::live::StreamSlots;

    fn entry(id: i64) -> Arc<FeedEntry> {
        Arc::new(FeedEntry {
            id,
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            kind: FeedKind::StatusChanged,
            from_status: Some(OrderStatus::Confirmed),
            status: OrderStatus::Processing,
            tracking_number: None,
            actor_role: "system".into(),
            reason: None,
            created_at: Utc::now(),
        })
    }

    fn follower(receiver: Receiver<Arc<FeedEntry>>) -> Follower {
        let hour = std::time::Duration::from_secs(3600);
        Follower {
            // Never connected: a follower that does not replay or recheck reads nothing.
            pool: PgPool::connect_lazy("postgres://127.0.0.1:1/none").expect("lazy pool"),
            viewer: CurrentUser {
                id: Uuid::now_v7(),
                role: common::domain::Role::Vendor,
                token_version: 0,
            },
            recheck: tokio::time::interval_at(tokio::time::Instant::now() + hour, hour),
            receiver,
            cursor: 0,
            replaying: false,
            ended: false,
            view: View {
                customer: None,
                order_id: None,
                status: None,
            },
            _slot: StreamSlots::new(1, 1).take(Uuid::now_v7()).expect("slot"),
        }
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_so_and_closed_rather_than_skipping() {
        let (sender, receiver) = broadcast::channel(2);
        let mut follower = follower(receiver);
        sender.send(entry(1)).expect("sent");
        let first = follower.next_events().await.expect("an event");
        assert!(
            format!("{first:?}").contains(r"id: 1\nevent: status_changed"),
            "{first:?}"
        );
        for id in 2..=6 {
            sender.send(entry(id)).expect("sent");
        }
        let told = follower.next_events().await.expect("told");
        assert_eq!(told.len(), 1);
        assert!(format!("{told:?}").contains(r"event: lagged"), "{told:?}");
        assert!(
            follower.next_events().await.is_none(),
            "then the stream ends; the client resumes from event 1"
        );
    }

    #[tokio::test]
    async fn entries_already_passed_are_not_sent_again() {
        let (sender, receiver) = broadcast::channel(8);
        let mut follower = follower(receiver);
        follower.cursor = 3;
        for id in [2, 3, 4] {
            sender.send(entry(id)).expect("sent");
        }
        let next = follower.next_events().await.expect("an event");
        assert!(
            format!("{next:?}").contains(r"id: 4\nevent: status_changed"),
            "{next:?}"
        );
        assert_eq!(follower.cursor, 4);
    }
}
