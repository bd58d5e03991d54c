//! Order emails through a real SMTP server: aiosmtpd, run from the virtualenv that
//! `scripts/test.sh` makes (or the Python named by `SMTP_TEST_PYTHON`), storing what it
//! receives in a maildir that the test reads.

mod tls;

use std::{path::PathBuf, time::Duration};

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, order_body, test_settings, wait_until};

pub struct SmtpServer {
    pub port: u16,
    maildir: PathBuf,
    _process: Child,
}

/// An aiosmtpd handler that takes `delay` seconds over each message before storing it, so
/// a sender can be killed in the middle of a send.
const SLOW_MAILBOX: &str = "import asyncio
from aiosmtpd.handlers import Mailbox

class SlowMailbox(Mailbox):
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)
";

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl SmtpServer {
    async fn start() -> Self {
        Self::start_on(free_port(), false).await
    }

    /// On `port`; `slow`: 0.3 s over each message.
    pub async fn start_on(port: u16, slow: bool) -> Self {
        Self::start_with(port, slow, &[]).await
    }

    /// With more aiosmtpd arguments (TLS certificates).
    async fn start_with(port: u16, slow: bool, extra: &[String]) -> Self {
        let python = std::env::var("SMTP_TEST_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/../target/test-venv/bin/python",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        let maildir = std::env::temp_dir().join(format!("orderflow-mail-{}", Uuid::now_v7()));
        // The slow handler's module sits beside the maildir, on the Python path.
        let modules = maildir.with_extension("py");
        std::fs::create_dir_all(&modules).expect("module folder");
        std::fs::write(modules.join("slow_mailbox.py"), SLOW_MAILBOX).expect("module");
        let handler = if slow {
            "slow_mailbox.SlowMailbox"
        } else {
            "aiosmtpd.handlers.Mailbox"
        };
        let process = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(["-c", handler])
            .arg(&maildir)
            .env("PYTHONPATH", &modules)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} -m aiosmtpd ({e}); scripts/test.sh installs it")
            });
        wait_until("aiosmtpd listens", Duration::from_secs(15), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Self {
            port,
            maildir,
            _process: process,
        }
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("message"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.maildir);
        let _ = std::fs::remove_dir_all(self.maildir.with_extension("py"));
    }
}

/// The value of `header` in a raw message (first occurrence, unfolded).
pub fn header<'a>(message: &'a str, header: &str) -> &'a str {
    let prefix = format!("{header}: ");
    message
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {header} in {message}"))
}

/// The api and one worker with `overrides` among the settings, a vendor, alice, and a
/// product `LAMP` with 5 in stock.
async fn lamp_shop(pool: &PgPool, overrides: &[(&str, &str)]) -> (TestApp, TestUser, TestUser) {
    let app = TestApp::start(pool.clone(), test_settings(overrides), true).await;
    app.start_workers(1);
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    (app, vendor, alice)
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_orders_life_sends_its_customer_exactly_the_expected_emails(pool: PgPool) {
    let smtp = SmtpServer::start().await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let (app, vendor, alice) = lamp_shop(
        &pool,
        &[
            ("SMTP_URL", smtp_url.as_str()),
            ("SHOP_NAME", "Lamp Shop"),
            ("SUPPORT_EMAIL", "help@lamps.test"),
        ],
    )
    .await;
    let bob = app.user(Role::Customer, "bob").await;
    let me: serde_json::Value = app
        .get("/api/users/me", &bob.token)
        .await
        .json()
        .await
        .expect("me");
    assert_eq!(me["order_emails"], true, "on unless switched off");
    let response = app
        .put(
            "/api/users/me",
            &bob.token,
            json!({ "order_emails": false }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: serde_json::Value = response.json().await.expect("me");
    assert_eq!(me["order_emails"], false, "bob switches order emails off");

    let id = app.order_id(&alice, "LAMP", 1).await;
    let mut bobs_body = order_body(&[("LAMP", 1)]);
    bobs_body["customer_email"] = json!("bob@example.com");
    let response = app.post("/api/orders", Some(&bob.token), bobs_body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let bobs: serde_json::Value = response.json().await.expect("order");
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    app.move_order(&vendor, &id, json!({ "status": "processing" }))
        .await;
    let shipped = json!({ "status": "shipped", "tracking_number": "TRK-42" });
    app.move_order(&vendor, &id, shipped).await;
    app.move_order(&vendor, &id, json!({ "status": "delivered" }))
        .await;
    let bobs_id = bobs["id"].as_str().expect("id");
    app.wait_for_status(&bob.token, bobs_id, "confirmed").await;

    // Confirmed, shipped, delivered; `processing` is not emailed, and bob said no.
    wait_until("three emails arrive", Duration::from_secs(20), || async {
        smtp.messages().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 3, "exactly three emails: {messages:#?}");

    let sent: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status::text FROM emails WHERE sent_at IS NOT NULL ORDER BY created_at, id",
    )
    .fetch_all(&pool)
    .await
    .expect("sent emails");
    let statuses: Vec<&str> = sent.iter().map(|(_, status)| status.as_str()).collect();
    assert_eq!(statuses, ["confirmed", "shipped", "delivered"]);
    for ((event_id, status), subject_part) in sent.iter().zip([
        "Your order is confirmed",
        "Your order is on its way",
        "Your order was delivered",
    ]) {
        let message = messages
            .iter()
            .find(|m| header(m, "Message-ID").starts_with(&format!("<{event_id}@")))
            .unwrap_or_else(|| panic!("no email with the id of the {status} event"));
        assert_eq!(header(message, "To"), "customer@example.com");
        assert_eq!(header(message, "From"), "\"Lamp Shop\" <orders@localhost>");
        assert_eq!(header(message, "Reply-To"), "help@lamps.test");
        let subject = header(message, "Subject");
        assert!(
            subject.starts_with("Lamp Shop: ") && subject.contains(subject_part),
            "{subject}"
        );
        assert!(message.contains("multipart/alternative"), "{message}");
        match status.as_str() {
            "confirmed" => assert!(!message.contains("TRK-42"), "{message}"),
            _ => assert!(message.contains("TRK-42"), "the tracking number: {message}"),
        }
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_email_that_cannot_be_sent_yet_holds_nothing_up_and_goes_out_once_it_can(pool: PgPool) {
    let port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let (app, _, alice) = lamp_shop(
        &pool,
        &[
            ("SMTP_URL", smtp_url.as_str()),
            ("EMAIL_RETRY_FIRST_MS", "200"),
            ("EMAIL_RETRY_MAX_MS", "400"),
        ],
    )
    .await;
    let id = app.order_id(&alice, "LAMP", 1).await;
    // No SMTP server: the order is confirmed all the same, and the email keeps failing.
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    wait_until(
        "the send has failed twice",
        Duration::from_secs(10),
        || async {
            let attempts: Option<i32> = sqlx::query_scalar("SELECT attempts FROM emails")
                .fetch_optional(&pool)
                .await
                .expect("attempts");
            attempts.is_some_and(|attempts| attempts >= 2)
        },
    )
    .await;
    let (sent, given_up, error): (bool, bool, Option<String>) = sqlx::query_as(
        "SELECT sent_at IS NOT NULL, given_up_at IS NOT NULL, last_error FROM emails",
    )
    .fetch_one(&pool)
    .await
    .expect("email");
    assert!(!sent && !given_up, "still to send");
    assert!(error.is_some(), "the failure is recorded");

    let smtp = SmtpServer::start_on(port, false).await;
    wait_until("the email arrives", Duration::from_secs(10), || async {
        !smtp.messages().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.messages().len(), 1, "sent once");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM emails WHERE sent_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("sent");
    assert!(attempts >= 2);
}

/// The `.eml` files in `dir`.
fn eml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.expect("entry").path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn money_taken_and_given_back_sends_receipts_with_the_amounts(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("orderflow-eml-{}", Uuid::now_v7()));
    let dir_setting = dir.to_string_lossy().into_owned();
    let (app, vendor, alice) = lamp_shop(&pool, &[("EMAIL_DIR", dir_setting.as_str())]).await;
    let admin = app.user(Role::Admin, "admin").await;
    let id = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let paid = app
        .post(
            &format!("/api/orders/{id}/payments"),
            Some(&vendor.token),
            json!({ "amount": "40.00", "reference": "COD-1" }),
        )
        .await;
    assert_eq!(paid.status(), StatusCode::ACCEPTED);
    let ledger = format!("/api/orders/{id}/payments");
    wait_until(
        "the payment is applied",
        Duration::from_secs(10),
        || async {
            let read: serde_json::Value = app
                .get(&ledger, &admin.token)
                .await
                .json()
                .await
                .expect("ledger");
            read["payment"]["status"] == "paid"
        },
    )
    .await;
    let refund = app
        .post(
            &format!("/api/orders/{id}/refunds"),
            Some(&admin.token),
            json!({ "amount": "15.00", "reason": "scratched" }),
        )
        .await;
    assert_eq!(refund.status(), StatusCode::ACCEPTED);
    // The confirmation, the receipt and the refund.
    wait_until(
        "three emails are written",
        Duration::from_secs(20),
        || async { eml_files(&dir).len() == 3 },
    )
    .await;
    let messages: Vec<String> = eml_files(&dir)
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("eml"))
        .collect();
    let with = |subject: &str| {
        messages
            .iter()
            .find(|m| header(m, "Subject").contains(subject))
            .unwrap_or_else(|| panic!("no email about {subject:?}"))
    };
    let receipt = with("Payment received: your receipt");
    assert!(
        receipt.contains("Paid now: 40.00 USD") && receipt.contains("Paid in all: 40.00 USD"),
        "{receipt}"
    );
    assert!(
        !receipt.contains("COD-1"),
        "staff references stay out: {receipt}"
    );
    let refunded = with("A refund is on its way to you");
    assert!(refunded.contains("Refunded now: 15.00 USD"), "{refunded}");
    assert!(
        refunded.contains("Refunded in all: 15.00 USD"),
        "{refunded}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn without_an_smtp_server_emails_are_written_to_the_folder_as_eml_files(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("orderflow-eml-{}", Uuid::now_v7()));
    let dir_setting = dir.to_string_lossy().into_owned();
    let (app, _, alice) = lamp_shop(&pool, &[("EMAIL_DIR", dir_setting.as_str())]).await;
    let id = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    wait_until(
        "the .eml file is written",
        Duration::from_secs(10),
        || async { !eml_files(&dir).is_empty() },
    )
    .await;
    let files = eml_files(&dir);
    assert_eq!(files.len(), 1);
    let message = std::fs::read_to_string(&files[0]).expect("eml");
    assert_eq!(header(&message, "To"), "customer@example.com");
    assert!(header(&message, "Subject").contains("Your order is confirmed"));
    let _ = std::fs::remove_dir_all(&dir);
}
