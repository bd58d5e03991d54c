//! `PUT /api/orders/{id}`: contact, shipping and notes (customers, while the order is
//! pending or confirmed); staff may also set the tracking number.

use axum::{Json, extract::State};
use common::domain::OrderStatus;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{OrderResponse, OrderRow, load_response, order_columns, owner_filter};
use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath},
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderRequest {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub customer_name: Option<String>,
    #[schema(format = "email", max_length = 254)]
    pub customer_email: Option<String>,
    #[schema(max_length = 20, pattern = r"^[0-9 +().-]*$")]
    pub customer_phone: Option<String>,
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub shipping_address: Option<String>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// Staff only.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub tracking_number: Option<String>,
}

#[utoipa::path(
    put, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = UpdateOrderRequest,
    responses(
        (status = 200, description = "OK", body = OrderResponse),
        (status = 403, description = "A customer setting the tracking number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order can no longer be edited", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_order(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<UpdateOrderRequest>,
) -> ApiResult<Json<OrderResponse>> {
    if body.tracking_number.is_some() {
        user.require_staff()?;
    }
    let mut v = Violations::new();
    if let Some(name) = &body.customer_name {
        v.length(name.trim(), "customer_name", 1, 255);
    }
    if let Some(email) = &body.customer_email {
        v.email(email.trim(), "customer_email");
    }
    if let Some(phone) = &body.customer_phone {
        v.phone(phone, "customer_phone");
    }
    if let Some(address) = &body.shipping_address {
        v.length(address.trim(), "shipping_address", 1, 1000);
    }
    if let Some(notes) = &body.notes {
        v.length(notes, "notes", 0, 2000);
    }
    if let Some(tracking) = &body.tracking_number {
        v.length(tracking.trim(), "tracking_number", 1, 100);
    }
    v.finish()?;

    // Customers edit while nothing has left the warehouse; staff until the order is final.
    let editable: &[OrderStatus] = if user.role.is_staff() {
        &[
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Processing,
            OrderStatus::PartiallyShipped,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
        ]
    } else {
        &[OrderStatus::Pending, OrderStatus::Confirmed]
    };
    let mut tx = state.pool.begin().await?;
    let current: OrderRow = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2) FOR NO KEY UPDATE"
    ))
    .bind(id)
    .bind(owner_filter(&user))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound(super::model::NO_ORDER))?;
    if !editable.contains(&current.projected_status) {
        return Err(ApiError::conflict(
            "order_locked",
            format!(
                "An order that is {} can no longer be edited.",
                current.projected_status
            ),
        ));
    }
    let updated: OrderRow = sqlx::query_as(concat!(
        "UPDATE orders SET customer_name = COALESCE($2, customer_name), customer_email = COALESCE($3, customer_email),
             customer_phone = COALESCE($4, customer_phone), shipping_address = COALESCE($5, shipping_address),
             notes = COALESCE($6, notes), tracking_number = COALESCE($7, tracking_number), updated_at = now()
         WHERE id = $1 RETURNING ",
        order_columns!()
    ))
    .bind(id)
    .bind(body.customer_name.as_deref().map(str::trim))
    .bind(body.customer_email.as_deref().map(str::trim))
    .bind(body.customer_phone.as_deref().map(str::trim))
    .bind(body.shipping_address.as_deref().map(str::trim))
    .bind(&body.notes)
    .bind(body.tracking_number.as_deref().map(str::trim))
    .fetch_one(&mut *tx)
    .await?;
    let response = load_response(&mut tx, updated, user.role).await?;
    tx.commit().await?;
    Ok(Json(response))
}
