//! Reading orders: one, the caller's own, all (staff).

use axum::{Json, extract::State};
use common::domain::OrderStatus;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::model::{OrderResponse, OrderRow, find_visible, items_of, load_response, order_columns};
use crate::{
    auth::{CurrentUser, StaffUser},
    error::{ApiResult, Problem},
    extract::{AppPath, AppQuery},
    pagination::{Page, page_request},
    state::AppState,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
}

#[utoipa::path(
    get, path = "/api/orders/my", tag = "orders", security(("bearer" = [])),
    params(ListOrdersParams),
    responses((status = 200, description = "The caller's orders, newest first", body = Page<OrderResponse>))
)]
pub async fn list_my_orders(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<ListOrdersParams>,
) -> ApiResult<Json<Page<OrderResponse>>> {
    list(&state, Some(user.id), params).await
}

#[utoipa::path(
    get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(ListOrdersParams),
    responses(
        (status = 200, description = "Every order, newest first", body = Page<OrderResponse>),
        (status = 403, description = "Not a vendor or admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    _: StaffUser,
    AppQuery(params): AppQuery<ListOrdersParams>,
) -> ApiResult<Json<Page<OrderResponse>>> {
    list(&state, None, params).await
}

async fn list(
    state: &AppState,
    customer: Option<Uuid>,
    params: ListOrdersParams,
) -> ApiResult<Json<Page<OrderResponse>>> {
    let page = page_request(params.page, params.size)?;
    let mut conn = state.pool.acquire().await?;
    macro_rules! filter {
        () => {
            " FROM orders WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::order_status IS NULL OR status = $2)"
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", filter!()))
        .bind(customer)
        .bind(params.status)
        .fetch_one(&mut *conn)
        .await?;
    let orders: Vec<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        filter!(),
        " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(customer)
    .bind(params.status)
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut items = items_of(&mut conn, &ids).await?;
    let responses = orders
        .into_iter()
        .map(|order| {
            let lines = items.remove(&order.id).unwrap_or_default();
            OrderResponse::new(order, lines)
        })
        .collect();
    Ok(Json(Page::new(responses, total, page)))
}

#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "OK", body = OrderResponse),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<OrderResponse>> {
    let mut conn = state.pool.acquire().await?;
    let order = find_visible(&mut conn, id, &user).await?;
    Ok(Json(load_response(&mut conn, order).await?))
}
