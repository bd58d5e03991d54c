//! Reading the catalogue: every signed-in user sees active products; staff see all.

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppPath, AppQuery},
    pagination::{Page, contains_pattern, page_request},
    state::AppState,
    validation::Violations,
};

use super::model::{NO_PRODUCT, Product, ProductResponse, find, product_columns};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProductsParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
    /// Case-insensitive match on name or SKU.
    #[param(max_length = 100)]
    pub q: Option<String>,
}

#[utoipa::path(
    get, path = "/api/products", tag = "products", security(("bearer" = [])),
    params(ListProductsParams),
    responses(
        (status = 200, description = "Active products (staff also see inactive ones)", body = Page<ProductResponse>),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_products(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<ListProductsParams>,
) -> ApiResult<Json<Page<ProductResponse>>> {
    let page = page_request(params.page, params.size)?;
    if let Some(q) = &params.q {
        Violations::new()
            .check(
                q.chars().count() <= 100,
                "q",
                "must be at most 100 characters",
            )
            .finish()?;
    }
    let pattern = params
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(contains_pattern);
    let active_only = !user.role.is_staff();
    let mut conn = state.pool.acquire().await?;
    macro_rules! filter {
        () => {
            " FROM products WHERE ($1 = false OR is_active) AND ($2::text IS NULL OR name ILIKE $2 OR sku ILIKE $2)"
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", filter!()))
        .bind(active_only)
        .bind(&pattern)
        .fetch_one(&mut *conn)
        .await?;
    let products: Vec<Product> = sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        filter!(),
        " ORDER BY name, id LIMIT $3 OFFSET $4"
    ))
    .bind(active_only)
    .bind(&pattern)
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let staff = user.role.is_staff();
    Ok(Json(
        Page::new(products, total, page).map(|p| ProductResponse::for_viewer(p, staff)),
    ))
}

#[utoipa::path(
    get, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "OK", body = ProductResponse),
        (status = 404, description = "Unknown, or inactive for a customer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_product(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<ProductResponse>> {
    let mut conn = state.pool.acquire().await?;
    let product = find(&mut conn, id)
        .await?
        .filter(|p| p.is_active || user.role.is_staff())
        .ok_or(ApiError::NotFound(NO_PRODUCT))?;
    Ok(Json(ProductResponse::for_viewer(
        product,
        user.role.is_staff(),
    )))
}
