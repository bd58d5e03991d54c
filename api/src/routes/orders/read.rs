//! Reading orders: one, the caller's own, all (staff).

use axum::{Json, extract::State};
use common::domain::{OrderStatus, Role};
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllOrdersParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// `true`: only stalled orders; `false`: only the others.
    pub stalled: Option<bool>,
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
    let filter = Filter {
        customer: Some(user.id),
        status: params.status,
        stalled: None,
    };
    list(&state, filter, params.page, params.size, user.role).await
}

#[utoipa::path(
    get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(AllOrdersParams),
    responses(
        (status = 200, description = "Every order, newest first", body = Page<OrderResponse>),
        (status = 403, description = "Not a vendor or admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    AppQuery(params): AppQuery<AllOrdersParams>,
) -> ApiResult<Json<Page<OrderResponse>>> {
    let filter = Filter {
        customer: None,
        status: params.status,
        stalled: params.stalled,
    };
    list(&state, filter, params.page, params.size, user.role).await
}

macro_rules! filters {
    () => {
        " AND ($2::order_status IS NULL OR status = $2) AND ($3::bool IS NULL OR (stalled_at IS NOT NULL) = $3)"
    };
}

/// A page of orders and the total, in one round trip.
macro_rules! page_of {
    ($owner:literal) => {
        concat!(
            "SELECT ",
            order_columns!(),
            ", (SELECT count(*) FROM orders WHERE ",
            $owner,
            filters!(),
            ") AS total FROM orders WHERE ",
            $owner,
            filters!(),
            " ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        )
    };
}

/// A customer's list has its own text, so the plan PostgreSQL caches for it always uses
/// the customer index. `bench/list_my_orders.sql` runs it under pgbench.
pub(crate) const CUSTOMER_PAGE_SQL: &str = page_of!("customer_id = $1");
const ALL_PAGE_SQL: &str = page_of!("$1::uuid IS NULL");

/// One order of a page, with the number of orders on all pages.
#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    order: OrderRow,
    total: i64,
}

async fn count(conn: &mut sqlx::PgConnection, filter: &Filter) -> sqlx::Result<i64> {
    sqlx::query_scalar(concat!(
        "SELECT count(*) FROM orders WHERE ($1::uuid IS NULL OR customer_id = $1)",
        filters!()
    ))
    .bind(filter.customer)
    .bind(filter.status)
    .bind(filter.stalled)
    .fetch_one(conn)
    .await
}

/// Which orders a list shows.
struct Filter {
    customer: Option<Uuid>,
    status: Option<OrderStatus>,
    stalled: Option<bool>,
}

async fn list(
    state: &AppState,
    filter: Filter,
    page: Option<i64>,
    size: Option<i64>,
    viewer: Role,
) -> ApiResult<Json<Page<OrderResponse>>> {
    let page = page_request(page, size)?;
    let mut conn = state.pool.acquire().await?;
    let sql = if filter.customer.is_some() {
        CUSTOMER_PAGE_SQL
    } else {
        ALL_PAGE_SQL
    };
    let rows: Vec<PageRow> = sqlx::query_as(sql)
        .bind(filter.customer)
        .bind(filter.status)
        .bind(filter.stalled)
        .bind(page.size)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let total = match rows.first() {
        Some(row) => row.total,
        // A page past the end: count on its own.
        None => count(&mut conn, &filter).await?,
    };
    let orders: Vec<OrderRow> = rows.into_iter().map(|row| row.order).collect();
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut items = items_of(&mut conn, &ids).await?;
    let responses = orders
        .into_iter()
        .map(|order| {
            let lines = items.remove(&order.id).unwrap_or_default();
            OrderResponse::new(order, lines, viewer)
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
    Ok(Json(load_response(&mut conn, order, user.role).await?))
}
