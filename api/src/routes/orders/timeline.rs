//! An order's timeline. Staff see every entry as written: who acted, their notes, internal
//! reasons, command sequence numbers. Customers see what happened to their order in
//! customer-facing words: no staff ids, notes or internal reasons, and no staff requests
//! or refusals that never changed anything.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use common::{
    domain::{OrderStatus, customer_text},
    timeline::EntryKind,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::find_visible;
use crate::{
    auth::CurrentUser,
    error::{ApiResult, Problem},
    extract::AppPath,
    state::AppState,
};

/// A timeline row as stored.
#[derive(sqlx::FromRow)]
struct StoredEntry {
    id: Uuid,
    kind: String,
    from_status: Option<OrderStatus>,
    to_status: Option<OrderStatus>,
    actor_id: Option<Uuid>,
    actor_role: String,
    reason: Option<String>,
    seq: Option<i64>,
    created_at: DateTime<Utc>,
}

/// One entry of an order's timeline. Fields marked *staff only* are absent for customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub id: Uuid,
    /// `created`, `status_change_requested`, `cancel_requested`, `status_changed`,
    /// `payment_changed`, `rejected`, `notified`, and for staff also `payment_requested` and
    /// `skipped`.
    pub kind: String,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    /// Staff see `customer`, `vendor`, `admin` or `system`; customers see `customer`,
    /// `store` or `system`.
    pub actor_role: String,
    /// What happened, in words meant for the customer.
    pub message: String,
    /// *Staff only*: the user who acted; empty for the system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Uuid>,
    /// *Staff only*: the note or internal reason recorded with the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// *Staff only*: the command sequence number this entry belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl StoredEntry {
    fn message(&self) -> String {
        match (EntryKind::parse(&self.kind), self.to_status) {
            (Some(EntryKind::Created), _) => "Order placed.".to_owned(),
            (Some(EntryKind::StatusChanged), Some(to)) => {
                customer_text::status_sentence(to, self.reason.as_deref(), &self.actor_role)
                    .to_owned()
            }
            (Some(EntryKind::CancelRequested), _) => "Cancellation requested.".to_owned(),
            (Some(EntryKind::StatusChangeRequested), Some(to)) => {
                format!("Change to {to} requested.")
            }
            (Some(EntryKind::Rejected), Some(to)) => {
                format!("The change to {to} could not be made.")
            }
            (Some(EntryKind::Notified), _) => "Customer notified.".to_owned(),
            (Some(EntryKind::Skipped), _) => {
                "A command that could not be applied was skipped.".to_owned()
            }
            // Written in the customer's words by the worker.
            (
                Some(
                    EntryKind::PaymentChanged
                    | EntryKind::FulfillmentChanged
                    | EntryKind::UnitsCancelled,
                ),
                _,
            ) => self.reason.clone().unwrap_or_default(),
            (Some(EntryKind::PaymentRequested), _) => "Payment operation requested.".to_owned(),
            (Some(EntryKind::FulfillmentRequested), _) => "Parcel change requested.".to_owned(),
            _ => self.kind.replace('_', " "),
        }
    }

    /// Whether a customer sees this entry: what changed their order, and their own requests.
    fn shown_to_customers(&self) -> bool {
        matches!(
            EntryKind::parse(&self.kind),
            Some(
                EntryKind::Created
                    | EntryKind::StatusChanged
                    | EntryKind::PaymentChanged
                    | EntryKind::FulfillmentChanged
                    | EntryKind::UnitsCancelled
                    | EntryKind::Notified
            )
        ) || self.actor_role == "customer"
    }

    fn staff_view(self) -> TimelineEntry {
        TimelineEntry {
            message: self.message(),
            id: self.id,
            kind: self.kind,
            from_status: self.from_status,
            to_status: self.to_status,
            actor_role: self.actor_role,
            actor_id: self.actor_id,
            reason: self.reason,
            seq: self.seq,
            created_at: self.created_at,
        }
    }

    fn customer_view(self) -> TimelineEntry {
        let actor = customer_text::actor_label(&self.actor_role);
        TimelineEntry {
            actor_role: actor.to_owned(),
            actor_id: None,
            reason: None,
            seq: None,
            ..self.staff_view()
        }
    }
}

#[utoipa::path(
    get, path = "/api/orders/{id}/events", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order's history, oldest first: everything for staff, \
            the customer view for customers", body = Vec<TimelineEntry>),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn order_timeline(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<Vec<TimelineEntry>>> {
    let mut conn = state.pool.acquire().await?;
    find_visible(&mut conn, id, &user).await?;
    let entries: Vec<StoredEntry> = sqlx::query_as(
        "SELECT id, kind, from_status, to_status, actor_id, actor_role, reason, seq, created_at
         FROM order_events WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let view = if user.role.is_staff() {
        entries.into_iter().map(StoredEntry::staff_view).collect()
    } else {
        entries
            .into_iter()
            .filter(StoredEntry::shown_to_customers)
            .map(StoredEntry::customer_view)
            .collect()
    };
    Ok(Json(view))
}
