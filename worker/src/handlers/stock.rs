//! Stock movements of an order. `stock` is what can still be sold; `reserved` is what
//! confirmed or processing orders hold until they ship or are cancelled.

use sqlx::PgConnection;
use uuid::Uuid;

/// Locks every product of `orders` in id order (`NO KEY UPDATE`, as below), so a batch
/// takes its product locks once and in the same order as every other batch.
pub async fn lock_products(conn: &mut PgConnection, orders: &[Uuid]) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT 1 FROM products
         WHERE id IN (SELECT product_id FROM order_items WHERE order_id = ANY($1))
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(orders)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes every line's quantity out of stock, all or nothing, in one statement. Products
/// are locked in id order, so concurrent orders never deadlock and never oversell. The
/// lock is `NO KEY UPDATE`: it does not block the foreign-key checks of orders being
/// placed for the same products (`FOR UPDATE` made every placement wait for the
/// reservations in flight). `Err` lists the SKUs that are short (and nothing moved).
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Result<(), Vec<String>>> {
    let short: Vec<String> = sqlx::query_scalar(
        "WITH lines AS (
             SELECT p.id, p.sku, p.stock, i.quantity FROM order_items i JOIN products p ON p.id = i.product_id
             WHERE i.order_id = $1 ORDER BY p.id FOR NO KEY UPDATE OF p
         ), short AS (
             SELECT sku FROM lines WHERE stock < quantity
         ), moved AS (
             UPDATE products p SET stock = p.stock - l.quantity, reserved = p.reserved + l.quantity,
                 updated_at = now()
             FROM lines l WHERE p.id = l.id AND NOT EXISTS (SELECT 1 FROM short)
         )
         SELECT sku FROM short ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(if short.is_empty() { Ok(()) } else { Err(short) })
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
