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
    pagination::{Page, PageRequest, page_request},
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
    let filter = Filter::Customer {
        id: user.id,
        status: params.status,
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
    let filter = Filter::All {
        status: params.status,
        stalled: params.stalled,
    };
    list(&state, filter, params.page, params.size, user.role).await
}

/// One customer's orders (`$1`), in a status (`$2`) if given.
macro_rules! customer_orders {
    () => {
        "customer_id = $1 AND ($2::order_status IS NULL OR status = $2)"
    };
}

/// How many orders `customer_orders!` matches, exactly and without counting them: the
/// triggers' `order_counts` for every status past pending, plus the customer's pending
/// orders counted from `orders_customer_status_idx` (few: the workers decide them within
/// moments). Both read in the statement's one snapshot.
macro_rules! customer_total {
    () => {
        "(SELECT coalesce(sum(orders), 0)::bigint FROM order_counts
              WHERE customer_id = $1 AND ($2::order_status IS NULL OR status = $2))
         + (SELECT count(*) FROM orders WHERE customer_id = $1 AND status = 'pending'
              AND ($2::order_status IS NULL OR $2 = 'pending'))"
    };
}

/// Everyone's orders, in a status (`$1`) and stalled or not (`$2`) if given.
macro_rules! all_orders {
    () => {
        "($1::order_status IS NULL OR status = $1) AND ($2::bool IS NULL OR (stalled_at IS NOT NULL) = $2)"
    };
}

/// How many orders `all_orders!` matches, counted: staff lists filter on `stalled` too,
/// which `order_counts` does not keep.
macro_rules! all_total {
    () => {
        concat!("(SELECT count(*) FROM orders WHERE ", all_orders!(), ")")
    };
}

/// A page of orders and the total, in one round trip.
macro_rules! page_of {
    ($filter:expr, $total:expr) => {
        concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            $total,
            " AS total FROM orders WHERE ",
            $filter,
            " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        )
    };
}

/// Each kind of list has its own text, so the plan PostgreSQL caches for it fits it.
/// `bench/list_my_orders.sql` runs the customer's under pgbench.
pub(crate) const CUSTOMER_PAGE_SQL: &str = page_of!(customer_orders!(), customer_total!());
const ALL_PAGE_SQL: &str = page_of!(all_orders!(), all_total!());

/// One order of a page, with the number of orders on all pages.
#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    order: OrderRow,
    total: i64,
}

/// Which orders a list shows.
enum Filter {
    Customer {
        id: Uuid,
        status: Option<OrderStatus>,
    },
    All {
        status: Option<OrderStatus>,
        stalled: Option<bool>,
    },
}

impl Filter {
    async fn page(
        &self,
        conn: &mut sqlx::PgConnection,
        page: PageRequest,
    ) -> sqlx::Result<Vec<PageRow>> {
        match *self {
            Filter::Customer { id, status } => {
                sqlx::query_as(CUSTOMER_PAGE_SQL).bind(id).bind(status)
            }
            Filter::All { status, stalled } => {
                sqlx::query_as(ALL_PAGE_SQL).bind(status).bind(stalled)
            }
        }
        .bind(page.size)
        .bind(page.offset())
        .fetch_all(conn)
        .await
    }

    /// The total on its own, for a page past the end.
    async fn count(&self, conn: &mut sqlx::PgConnection) -> sqlx::Result<i64> {
        match *self {
            Filter::Customer { id, status } => {
                sqlx::query_scalar(concat!("SELECT ", customer_total!()))
                    .bind(id)
                    .bind(status)
            }
            Filter::All { status, stalled } => sqlx::query_scalar(concat!("SELECT ", all_total!()))
                .bind(status)
                .bind(stalled),
        }
        .fetch_one(conn)
        .await
    }
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
    let rows = filter.page(&mut conn, page).await?;
    let total = match rows.first() {
        Some(row) => row.total,
        None => filter.count(&mut conn).await?,
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
