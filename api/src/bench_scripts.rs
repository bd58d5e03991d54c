//! The pgbench scripts in `bench/` are made from the statements the api runs, so the
//! benchmark compares the api with PostgreSQL doing exactly the same work. A test fails
//! when a script no longer matches the code; `BLESS=1 cargo test -p api bench_scripts`
//! writes them anew.

use crate::{
    accounts::CREDENTIALS_OF_SQL,
    routes::orders::{CUSTOMER_PAGE_SQL, INSERT_ORDERS_SQL, ITEMS_OF_SQL, PRICE_SQL},
};

/// A time-ordered id, like the api's v7 ids, derived from the client and a random number
/// so it is the same wherever one statement repeats it.
fn id(salt: &str) -> String {
    format!(
        "overlay(md5(:client_id || '-' || :n || '{salt}') placing lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0') from 1 for 12)::uuid"
    )
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// Replaces `$1`…`$n` (highest first, so `$1` never eats the start of `$12`) and puts the
/// statement on one line.
fn substitute(sql: &str, params: &[String]) -> String {
    let mut text = sql.to_owned();
    for (i, value) in params.iter().enumerate().rev() {
        text = text.replace(&format!("${}", i + 1), value);
    }
    assert!(!text.contains('$'), "every parameter has a pgbench value");
    text.split_whitespace().collect::<Vec<_>>().join(" ") + ";\n"
}

fn script(what: &str, statements: &[String]) -> String {
    format!(
        "-- Made from the api's code by `BLESS=1 cargo test -p api bench_scripts`: the statements\n\
         -- {what}.\n\\set n random(1, 1000000000000)\n{}",
        statements.concat()
    )
}

/// One `POST /api/orders` of a 3-line order (BENCH-1..3 at 1.00) by `:customer`.
fn create_order() -> String {
    let envelope = r#"'{"schema_version": 1, "type": "order.created", "seq": 1, "actor": {"role": "customer"}, "correlation_id": "0196f0e0-5a4b-7c1d-9e2f-3a4b5c6d7e8f", "occurred_at": "2026-11-25T12:00:00Z", "payload": {"currency": "USD", "items_count": 3, "total_amount": "3.00"}}'::jsonb"#;
    let order = id("order");
    let mut insert = vec![format!("ARRAY[{order}]")];
    insert.extend(strings(&[
        "ARRAY[:customer]::uuid[]",
        "ARRAY['USD']",
        "ARRAY[300]",
        "ARRAY[3]",
        "ARRAY['Bench']",
        "ARRAY['bench@example.com']",
        "ARRAY[NULL]::text[]",
        "ARRAY['1 Load Street']",
        "ARRAY[NULL]::text[]",
    ]));
    insert.push(format!(
        "ARRAY[{}, {}, {}]",
        id("line1"),
        id("line2"),
        id("line3")
    ));
    insert.push(format!("ARRAY[{order}, {order}, {order}]"));
    insert.extend(strings(&[
        "ARRAY[:product1, :product2, :product3]::uuid[]",
        "ARRAY['Bench item 1', 'Bench item 2', 'Bench item 3']",
        "ARRAY['BENCH-1', 'BENCH-2', 'BENCH-3']",
        "ARRAY[NULL, NULL, NULL]::text[]",
        "ARRAY[1, 1, 1]",
        "ARRAY[100, 100, 100]",
        "ARRAY[100, 100, 100]",
        "'created'",
    ]));
    insert.push(format!("ARRAY[{}]", id("entry")));
    insert.extend(strings(&["ARRAY['customer']", "'order.created'"]));
    insert.push(format!("ARRAY[{}]", id("event")));
    insert.push(format!("ARRAY[{envelope}]"));
    script(
        "one POST /api/orders runs (the caller's account, pricing, the insert)",
        &[
            substitute(CREDENTIALS_OF_SQL, &strings(&[":customer::uuid"])),
            substitute(
                PRICE_SQL,
                &strings(&["ARRAY[]::uuid[]", "ARRAY['bench-1', 'bench-2', 'bench-3']"]),
            ),
            substitute(INSERT_ORDERS_SQL, &insert),
        ],
    )
}

/// One `GET /api/orders/my` (first page of 20) by `:customer`, whose first page holds
/// the orders `:page_ids`.
fn list_my_orders() -> String {
    script(
        "one GET /api/orders/my runs (the caller's account, the page with its total, the lines)",
        &[
            substitute(CREDENTIALS_OF_SQL, &strings(&[":customer::uuid"])),
            substitute(
                CUSTOMER_PAGE_SQL,
                &strings(&[":customer::uuid", "NULL::order_status", "20", "0"]),
            ),
            substitute(ITEMS_OF_SQL, &strings(&[":page_ids::uuid[]"])),
        ],
    )
}

#[test]
fn the_pgbench_scripts_run_the_statements_the_api_runs() {
    for (file, expected) in [
        ("create_order.sql", create_order()),
        ("list_my_orders.sql", list_my_orders()),
    ] {
        let path = format!("{}/../bench/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&path, &expected).expect("write the pgbench script");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "bench/{file} no longer matches the code: run `BLESS=1 cargo test -p api bench_scripts`"
        );
    }
}
