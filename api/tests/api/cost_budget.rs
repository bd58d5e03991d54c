//! The order path's cost budget, counted by PostgreSQL itself (`pg_stat_statements`):
//! placing and confirming an order may run at most so many statements, store at most so
//! many rows and write at most so many WAL records. Orders are placed one at a time, each
//! confirmed before the next, so every batch holds one order: the worst case, and the same
//! count on every run. A change that makes the hot path dearer fails here, whatever the
//! machine's speed.
//!
//! The test observes through a connection of its own acting as `pg_monitor`, and its own
//! statements are left out of the count (the view keys statements by user).

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::helpers::{TestApp, order_body};

/// Orders placed and confirmed.
const ORDERS: usize = 40;
/// Budgets per order, a little above what the pipeline ran when they were set (17.12
/// statements, 13.03 rows, 91.6 WAL records; the margin covers the relays' once-a-second
/// sweeps, whose count follows the clock, not the orders).
const STATEMENTS_PER_ORDER: f64 = 18.0;
const ROWS_STORED_PER_ORDER: f64 = 13.5;
const WAL_RECORDS_PER_ORDER: f64 = 96.0;

/// What the pipeline's statements cost in all.
#[derive(Debug)]
struct Cost {
    statements: i64,
    wal_records: i64,
    /// Each statement's calls, rows and WAL records, dearest first.
    table: String,
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn placing_and_confirming_an_order_stays_within_its_cost_budget(pool: PgPool) {
    let mut probe = observer(&pool).await;
    let app = TestApp::spawn_pipeline(pool.clone(), 1).await;
    let (vendor, customer) = app.vendor_and_customer().await;
    for sku in ["COST-1", "COST-2", "COST-3"] {
        app.product(&vendor, sku, "5.00", 10_000).await;
    }
    wait_until_quiet(&mut probe).await;
    let rows_before = stored_rows(&mut probe).await;
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database WHERE datname = current_database()",
    )
    .execute(&mut probe)
    .await
    .expect("reset the statement counts");

    for _ in 0..ORDERS {
        let body = order_body(&[("COST-1", 1), ("COST-2", 2), ("COST-3", 3)]);
        let response = app.post("/api/orders", Some(&customer.token), body).await;
        assert_eq!(response.status(), 201);
        let order: serde_json::Value = response.json().await.expect("order");
        let id = Uuid::parse_str(order["id"].as_str().expect("id")).expect("uuid");
        let confirmed = "SELECT status = 'confirmed' FROM orders WHERE id = $1";
        poll(&mut probe, "the order is confirmed", confirmed, Some(id)).await;
    }
    wait_until_quiet(&mut probe).await;

    let cost = pipeline_cost(&mut probe).await;
    let rows_stored = stored_rows(&mut probe).await - rows_before;
    let per_order = |n: i64| n as f64 / ORDERS as f64;
    println!(
        "{ORDERS} orders placed and confirmed: {:.2} statements, {:.2} rows stored, {:.2} WAL records per order\n{}",
        per_order(cost.statements),
        per_order(rows_stored),
        per_order(cost.wal_records),
        cost.table
    );
    let within = |what: &str, measured: f64, budget: f64| {
        assert!(
            measured <= budget,
            "{what} per order: {measured:.2}, over the budget of {budget}\n{}",
            cost.table
        );
    };
    within(
        "statements",
        per_order(cost.statements),
        STATEMENTS_PER_ORDER,
    );
    within("rows stored", per_order(rows_stored), ROWS_STORED_PER_ORDER);
    within(
        "WAL records",
        per_order(cost.wal_records),
        WAL_RECORDS_PER_ORDER,
    );
    // The budget counted real work: every order confirmed, every event published.
    let confirmed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'confirmed'")
            .fetch_one(&mut probe)
            .await
            .expect("orders");
    assert_eq!(confirmed, ORDERS as i64);
}

/// A connection that reads the statistics as `pg_monitor`, so its own statements are
/// counted apart from the pipeline's. Fails with how to fix it when the extension is not
/// preloaded.
async fn observer(pool: &PgPool) -> PgConnection {
    let mut conn = PgConnection::connect_with(&pool.connect_options())
        .await
        .expect("observer connection");
    let preloaded: String = sqlx::query_scalar("SHOW shared_preload_libraries")
        .fetch_one(&mut conn)
        .await
        .expect("settings");
    assert!(
        preloaded.contains("pg_stat_statements"),
        "PostgreSQL does not preload pg_stat_statements: run scripts/pg-stat-statements.sh (scripts/test.sh does)"
    );
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO pg_monitor",
        "GRANT EXECUTE ON FUNCTION pg_stat_statements_reset TO pg_monitor",
        "SET ROLE pg_monitor",
    ] {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
    }
    conn
}

/// Waits until nothing is left to publish, so no work of the setup (or of the orders)
/// spills over the count.
async fn wait_until_quiet(probe: &mut PgConnection) {
    let drained = "SELECT NOT EXISTS (SELECT FROM outbox WHERE published_at IS NULL)";
    poll(probe, "the outbox drains", drained, None).await;
}

/// Runs `check` (with `id` as its parameter, if given) on the observer every 20 ms until
/// it answers true, for at most 10 s.
async fn poll(probe: &mut PgConnection, what: &str, check: &'static str, id: Option<Uuid>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut query = sqlx::query_scalar::<_, bool>(check);
        if let Some(id) = id {
            query = query.bind(id);
        }
        if query.fetch_one(&mut *probe).await.expect(what) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows in every table of the schema.
async fn stored_rows(probe: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT sum((xpath('/row/n/text()',
                    query_to_xml(format('SELECT count(*) AS n FROM %I.%I', schemaname, relname), false, true, '')
                ))[1]::text::bigint)::bigint
         FROM pg_stat_user_tables WHERE schemaname = 'public'",
    )
    .fetch_one(probe)
    .await
    .expect("count rows")
}

/// The statements the api and the worker ran on this database since the reset.
async fn pipeline_cost(probe: &mut PgConnection) -> Cost {
    let rows = sqlx::query(
        "SELECT s.calls, s.rows, s.wal_records, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) AS query
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.userid <> 'pg_monitor'::regrole
         ORDER BY s.calls DESC, s.wal_records DESC",
    )
    .fetch_all(probe)
    .await
    .expect("read pg_stat_statements");
    let mut cost = Cost {
        statements: 0,
        wal_records: 0,
        table: String::from("calls    rows     WAL  statement\n"),
    };
    for row in rows {
        let (calls, returned, wal): (i64, i64, i64) =
            (row.get("calls"), row.get("rows"), row.get("wal_records"));
        cost.statements += calls;
        cost.wal_records += wal;
        cost.table += &format!(
            "{calls:>5} {returned:>7} {wal:>7}  {}\n",
            row.get::<String, _>("query")
        );
    }
    cost
}
