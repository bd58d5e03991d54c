//! Parcels end to end: staff ship some units of some lines in parcels through the queue
//! and a real worker; the order is partially shipped until its last unit ships, delivered
//! once every parcel arrived; stock, lines, parcels, timelines and webhooks agree, and a
//! parcel that does not fit is refused naming its line.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use worker::handlers::{Outcome, PaymentPolicy};

use crate::{
    helpers::{TestApp, TestUser, assert_problem, order_body, wait_until},
    webhooks::{Receiver, shop},
};

/// Places 3 LAMP and 2 BULB for `customer`, waits for it to be confirmed and (by `staff`)
/// moved to processing; returns the order id and the two lines' ids.
async fn processing_order(
    app: &TestApp,
    staff: &TestUser,
    customer: &TestUser,
) -> (String, String, String) {
    let body = order_body(&[("LAMP", 3), ("BULB", 2)]);
    let response = app.post("/api/orders", Some(&customer.token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.expect("order");
    let id = order["id"].as_str().expect("id").to_owned();
    let item = |sku: &str| {
        let items = order["items"].as_array().expect("items");
        let line = items
            .iter()
            .find(|i| i["product_sku"] == sku)
            .expect("line");
        line["id"].as_str().expect("item id").to_owned()
    };
    let (lamp, bulb) = (item("LAMP"), item("BULB"));
    app.wait_for_status(&customer.token, &id, "confirmed").await;
    app.move_order(staff, &id, json!({ "status": "processing" }))
        .await;
    (id, lamp, bulb)
}

fn parcel(lines: &[(&str, i32)], tracking: &str) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(item, quantity)| json!({ "item_id": item, "quantity": quantity }))
        .collect();
    json!({ "lines": lines, "carrier": "DHL", "tracking_number": tracking })
}

/// Ships a parcel (asserting 202) and returns its id.
async fn ship(app: &TestApp, staff: &TestUser, order: &str, body: Value) -> String {
    let path = format!("/api/orders/{order}/fulfillments");
    let response = app.post(&path, Some(&staff.token), body.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{body}");
    let accepted: Value = response.json().await.expect("accepted");
    accepted["fulfillment_id"]
        .as_str()
        .expect("parcel id")
        .to_owned()
}

/// Records that a parcel arrived (asserting 202).
async fn deliver(app: &TestApp, staff: &TestUser, order: &str, parcel: &str) {
    let path = format!("/api/orders/{order}/fulfillments/{parcel}");
    let response = app
        .patch(&path, &staff.token, json!({ "status": "delivered" }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Asks for a parcel that must be refused with `status`; returns the problem.
async fn refused(
    app: &TestApp,
    staff: &TestUser,
    path: &str,
    body: Value,
    status: StatusCode,
) -> Value {
    let response = app.post(path, Some(&staff.token), body).await;
    assert_problem(response, status).await
}

async fn parcels(app: &TestApp, token: &str, order: &str) -> Value {
    let path = format!("/api/orders/{order}/fulfillments");
    let response = app.get(&path, token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("parcels")
}

async fn shipped_units(app: &TestApp, token: &str, order: &str) -> Vec<(String, i64)> {
    let order: Value = app
        .get(&format!("/api/orders/{order}"), token)
        .await
        .json()
        .await
        .expect("order");
    let mut units: Vec<(String, i64)> = order["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let sku = i["product_sku"].as_str().expect("sku").to_owned();
            (sku, i["quantity_shipped"].as_i64().expect("shipped"))
        })
        .collect();
    units.sort();
    units
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_order_ships_in_two_parcels_and_is_delivered_once_both_arrive(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[]).await;
    shop.endpoint(
        &receiver.url,
        &["order.fulfillment_created", "order.fulfillment_delivered"],
    )
    .await;
    let (app, vendor, alice) = (&shop.app, &shop.vendor, &shop.alice);
    app.product(vendor, "BULB", "10.00", 20).await;
    let (order, lamp, bulb) = processing_order(app, vendor, alice).await;

    let first = ship(app, vendor, &order, parcel(&[(&lamp, 2)], "TRK-1")).await;
    app.wait_for_status(&alice.token, &order, "partially_shipped")
        .await;
    let shipped = shipped_units(app, &alice.token, &order).await;
    assert_eq!(shipped, [("BULB".into(), 0), ("LAMP".into(), 2)]);
    assert_eq!(app.stock_of("LAMP").await, (47, 1), "two left the shelf");
    assert_eq!(app.stock_of("BULB").await, (18, 2));
    let edit = json!({ "notes": "second parcel on Monday" });
    let edited = app
        .put(&format!("/api/orders/{order}"), &vendor.token, edit)
        .await;
    assert_eq!(
        edited.status(),
        StatusCode::OK,
        "staff still edit a partly shipped order"
    );

    let second = ship(
        app,
        vendor,
        &order,
        parcel(&[(&lamp, 1), (&bulb, 2)], "TRK-2"),
    )
    .await;
    let order_now = app.wait_for_status(&alice.token, &order, "shipped").await;
    assert_eq!(order_now["tracking_number"], "TRK-2");
    assert_eq!(app.stock_of("LAMP").await, (47, 0));
    assert_eq!(app.stock_of("BULB").await, (18, 0));

    // The customer sees each parcel with its tracking number.
    let seen = parcels(app, &alice.token, &order).await;
    let list = seen["fulfillments"].as_array().expect("parcels");
    let tracking: Vec<&str> = list
        .iter()
        .map(|p| p["tracking_number"].as_str().expect("tracking"))
        .collect();
    assert_eq!(tracking, ["TRK-1", "TRK-2"]);
    assert_eq!(list[0]["id"], first.as_str());
    assert_eq!(list[1]["lines"].as_array().expect("lines").len(), 2);
    assert!(list.iter().all(|p| p["status"] == "shipped"));

    deliver(app, vendor, &order, &first).await;
    wait_until(
        "the first parcel arrived",
        std::time::Duration::from_secs(20),
        || async {
            parcels(app, &alice.token, &order).await["fulfillments"][0]["status"] == "delivered"
        },
    )
    .await;
    let still: Value = app
        .get(&format!("/api/orders/{order}"), &alice.token)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(still["status"], "shipped", "one parcel is still on its way");
    deliver(app, vendor, &order, &second).await;
    app.wait_for_status(&alice.token, &order, "delivered").await;

    // Both timelines tell it; the customer in their own words.
    let timeline: Value = app
        .get(&format!("/api/orders/{order}/events"), &alice.token)
        .await
        .json()
        .await
        .expect("timeline");
    let messages: Vec<&str> = timeline
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"A parcel with 2 items has shipped (tracking number TRK-1)."),
        "{messages:?}"
    );
    assert!(messages.contains(&"Your parcel TRK-1 with 2 items was delivered."));

    wait_until(
        "four parcel webhooks",
        std::time::Duration::from_secs(20),
        || async { receiver.received().len() >= 4 },
    )
    .await;
    let mut types: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().expect("type").to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "order.fulfillment_created",
            "order.fulfillment_created",
            "order.fulfillment_delivered",
            "order.fulfillment_delivered"
        ]
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_parcel_that_does_not_fit_is_refused_naming_its_line_and_a_retried_one_ships_once(
    pool: PgPool,
) {
    let shop = shop(&pool, &[]).await;
    let (app, vendor, alice) = (&shop.app, &shop.vendor, &shop.alice);
    app.product(vendor, "BULB", "10.00", 20).await;
    let (order, lamp, bulb) = processing_order(app, vendor, alice).await;
    let path = format!("/api/orders/{order}/fulfillments");
    let refused = |body: Value, status| refused(app, vendor, &path, body, status);

    let over = refused(
        parcel(&[(&bulb, 1), (&lamp, 4)], "T"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(over["errors"][0]["field"], "lines[1].quantity", "{over}");
    assert!(
        over["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only 3 of LAMP")),
        "{over}"
    );
    let stranger = uuid::Uuid::now_v7().to_string();
    let unknown = refused(
        parcel(&[(&stranger, 1)], "T"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(unknown["errors"][0]["field"], "lines[0].item_id");
    let empty = refused(parcel(&[], "T"), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(empty["errors"][0]["field"], "lines");
    let response = app
        .post(&path, Some(&alice.token), parcel(&[(&lamp, 1)], "T"))
        .await;
    assert_problem(response, StatusCode::FORBIDDEN).await;

    // The same request sent three times with one Idempotency-Key: one parcel.
    let body = parcel(&[(&lamp, 2)], "TRK-1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = app
            .client
            .request(Method::POST, format!("{}{path}", app.address))
            .bearer_auth(&vendor.token)
            .header("Idempotency-Key", "parcel-1")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.expect("accepted");
        ids.push(accepted["fulfillment_id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // What the accepted parcel claimed is no longer free, even before a worker ships it.
    let claimed = refused(
        parcel(&[(&lamp, 2)], "TRK-2"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        claimed["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only 1 of LAMP")),
        "{claimed}"
    );
    app.wait_for_status(&alice.token, &order, "partially_shipped")
        .await;
    let list = parcels(app, &alice.token, &order).await;
    assert_eq!(list["fulfillments"].as_array().expect("parcels").len(), 1);

    // A word cannot set partially_shipped; a parcel of an order not being prepared is 409.
    let response = app
        .patch(
            &format!("/api/orders/{order}/status"),
            &vendor.token,
            json!({ "status": "partially_shipped" }),
        )
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let confirmed = app.order_id(alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &confirmed, "confirmed")
        .await;
    let response = app
        .post(
            &format!("/api/orders/{confirmed}/fulfillments"),
            Some(&vendor.token),
            parcel(&[(&lamp, 1)], "T"),
        )
        .await;
    assert_problem(response, StatusCode::CONFLICT).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_parcel_command_delivered_three_times_ships_one_parcel(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 10).await;
    let order = app.order(&alice, "LAMP", 3).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let item = order["items"][0]["id"].as_str().expect("item").to_owned();
    let handle = async |envelope: &common::events::Envelope| {
        worker::handlers::handle(&pool, PaymentPolicy::MANUAL, envelope).await
    };
    let next = || async {
        let payload: Value = sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE order_id = $1::uuid ORDER BY seq DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("command");
        serde_json::from_value::<common::events::Envelope>(payload).expect("envelope")
    };
    assert_eq!(
        handle(&next().await).await.expect("created"),
        Outcome::Applied
    );
    let path = format!("/api/orders/{id}/status");
    let response = app
        .patch(&path, &vendor.token, json!({ "status": "processing" }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        handle(&next().await).await.expect("processing"),
        Outcome::Applied
    );
    let path = format!("/api/orders/{id}/fulfillments");
    let response = app
        .post(&path, Some(&vendor.token), parcel(&[(&item, 2)], "TRK-1"))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let command = next().await;
    let outcomes = [
        handle(&command).await.expect("first"),
        handle(&command).await.expect("second"),
        handle(&command).await.expect("third"),
    ];
    assert_eq!(
        outcomes,
        [Outcome::Applied, Outcome::Duplicate, Outcome::Duplicate]
    );
    let counts: (i64, i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM fulfillments), (SELECT count(*) FROM fulfillment_lines),
                (SELECT quantity_shipped FROM order_items)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(counts, (1, 1, 2));
    assert_eq!(app.stock_of("LAMP").await, (7, 1));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn cancelled_units_go_back_on_sale_shrink_the_total_and_the_rest_ships(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[]).await;
    shop.endpoint(&receiver.url, &["order.units_cancelled"])
        .await;
    let (app, vendor, alice) = (&shop.app, &shop.vendor, &shop.alice);
    app.product(vendor, "BULB", "10.00", 20).await;
    let (order, lamp, bulb) = processing_order(app, vendor, alice).await; // 3 × 40 + 2 × 10
    let path = format!("/api/orders/{order}/cancellations");
    let cancel = |lines: &[(&str, i32)]| {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(item, quantity)| json!({ "item_id": item, "quantity": quantity }))
            .collect();
        json!({ "lines": lines, "reason": "out of the colour" })
    };

    // The customer's time to change their mind is over once the order is being prepared.
    let late = app
        .post(&path, Some(&alice.token), cancel(&[(&lamp, 1)]))
        .await;
    assert_problem(late, StatusCode::CONFLICT).await;
    let too_many = refused(
        app,
        vendor,
        &path,
        cancel(&[(&bulb, 3)]),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(too_many["errors"][0]["field"], "lines[0].quantity");

    let response = app
        .post(&path, Some(&vendor.token), cancel(&[(&lamp, 1)]))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until(
        "the total shrank",
        std::time::Duration::from_secs(20),
        || async {
            let order: Value = app
                .get(&format!("/api/orders/{order}"), &alice.token)
                .await
                .json()
                .await
                .expect("order");
            order["total_amount"] == "100.00"
        },
    )
    .await;
    assert_eq!(
        app.stock_of("LAMP").await,
        (48, 2),
        "the cancelled lamp is on sale again"
    );
    // What is cancelled cannot ship: 2 lamps are left.
    let over = refused(
        app,
        vendor,
        &format!("/api/orders/{order}/fulfillments"),
        parcel(&[(&lamp, 3)], "T"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        over["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only 2 of LAMP"))
    );
    ship(app, vendor, &order, parcel(&[(&lamp, 2)], "TRK-1")).await;
    app.wait_for_status(&alice.token, &order, "partially_shipped")
        .await;
    // Cancelling the last units ships the order: everything left has left.
    let response = app
        .post(&path, Some(&vendor.token), cancel(&[(&bulb, 2)]))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let shipped = app.wait_for_status(&alice.token, &order, "shipped").await;
    assert_eq!(shipped["total_amount"], "80.00");
    let cancelled: Vec<i64> = shipped["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["quantity_cancelled"].as_i64().expect("cancelled"))
        .collect();
    assert_eq!(cancelled.iter().sum::<i64>(), 3);
    assert_eq!(app.stock_of("BULB").await, (20, 0));

    // Money taken beyond what the order would come to must be refunded first.
    let (paid, paid_lamp, _) = processing_order(app, vendor, alice).await;
    let receipt = json!({ "amount": "140.00" });
    let response = app
        .post(
            &format!("/api/orders/{paid}/payments"),
            Some(&vendor.token),
            receipt,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until(
        "the payment is recorded",
        std::time::Duration::from_secs(20),
        || async {
            let order: Value = app
                .get(&format!("/api/orders/{paid}"), &vendor.token)
                .await
                .json()
                .await
                .expect("order");
            order["payment"]["status"] == "paid"
        },
    )
    .await;
    let response = app
        .post(
            &format!("/api/orders/{paid}/cancellations"),
            Some(&vendor.token),
            cancel(&[(&paid_lamp, 1)]),
        )
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(problem["code"], "captured_exceeds_total");

    wait_until(
        "two webhooks",
        std::time::Duration::from_secs(20),
        || async { receiver.received().len() >= 2 },
    )
    .await;
    let first = receiver.received()[0].json();
    assert_eq!(first["type"], "order.units_cancelled");
    assert_eq!(first["payload"]["total_amount"], "100.00");
}
