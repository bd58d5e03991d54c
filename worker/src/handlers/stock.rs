//! Stock movements of an order. `stock` is what can still be sold; `reserved` is what
//! confirmed or processing orders hold until they ship or are cancelled.

use sqlx::PgConnection;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct Line {
    sku: String,
    stock: i32,
    quantity: i32,
}

/// Takes every line's quantity out of stock, all or nothing. Products are locked in id
/// order, so concurrent orders never deadlock and never oversell. `Err` lists the SKUs
/// that are short.
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Result<(), Vec<String>>> {
    let lines: Vec<Line> = sqlx::query_as(
        "SELECT p.sku, p.stock, i.quantity FROM order_items i JOIN products p ON p.id = i.product_id
         WHERE i.order_id = $1 ORDER BY p.id FOR UPDATE OF p",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    let short: Vec<String> = lines
        .into_iter()
        .filter(|l| l.stock < l.quantity)
        .map(|l| l.sku)
        .collect();
    if !short.is_empty() {
        return Ok(Err(short));
    }
    move_stock(
        conn,
        order_id,
        "stock = p.stock - i.quantity, reserved = p.reserved + i.quantity",
    )
    .await?;
    Ok(Ok(()))
}

/// Puts a cancelled order's reserved units back on sale.
pub async fn release(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<()> {
    move_stock(
        conn,
        order_id,
        "stock = p.stock + i.quantity, reserved = p.reserved - i.quantity",
    )
    .await
}

/// The goods left the warehouse: they are no longer reserved.
pub async fn ship(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<()> {
    move_stock(conn, order_id, "reserved = p.reserved - i.quantity").await
}

async fn move_stock(
    conn: &mut PgConnection,
    order_id: Uuid,
    assignments: &'static str,
) -> sqlx::Result<()> {
    let sql = format!(
        "UPDATE products p SET {assignments}, updated_at = now()
         FROM order_items i WHERE i.order_id = $1 AND p.id = i.product_id"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}
