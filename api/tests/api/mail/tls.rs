//! Order emails over TLS: STARTTLS and implicit TLS to an aiosmtpd whose certificate a test
//! CA signed, trusted through `SMTP_CA_FILE`; without it, no email leaves.

use std::{path::PathBuf, time::Duration};

use sqlx::PgPool;
use uuid::Uuid;

use super::{SmtpServer, free_port, header, lamp_shop};
use crate::helpers::wait_until;

/// A private CA and a certificate it signed for `localhost`, made with openssl.
struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("orderflow-tls-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("certificate folder");
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for args in [
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=Orderflow Test CA",
                ],
            ]
            .concat(),
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "localhost.key",
                    "-out",
                    "localhost.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
            &[
                "x509",
                "-req",
                "-in",
                "localhost.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "localhost.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ][..]
                .to_vec(),
        ] {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Places an order against an aiosmtpd speaking TLS (`tls_flag`: `--tlscert` for STARTTLS,
/// `--smtpscert` for implicit TLS) and returns the server and whether the email arrived
/// before its first send failed.
async fn send_over_tls(
    pool: &PgPool,
    tls_flag: &str,
    url: &str,
    trust_ca: bool,
) -> (SmtpServer, bool) {
    let certificates = TestCertificates::new();
    let port = free_port();
    let key_flag = tls_flag.replace("cert", "key");
    let extra = [
        tls_flag.to_owned(),
        certificates.path("localhost.pem"),
        key_flag,
        certificates.path("localhost.key"),
    ];
    let smtp = SmtpServer::start_with(port, false, &extra).await;
    let smtp_url = url.replace("PORT", &port.to_string());
    let ca_file = certificates.path("ca.pem");
    let mut settings = vec![
        ("SMTP_URL", smtp_url.as_str()),
        ("EMAIL_RETRY_FIRST_MS", "200"),
    ];
    if trust_ca {
        settings.push(("SMTP_CA_FILE", ca_file.as_str()));
    }
    let (app, _, alice) = lamp_shop(pool, &settings).await;
    let id = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    // Until it arrives or its first send fails.
    wait_until(
        "the email is sent or fails",
        Duration::from_secs(10),
        || async {
            let failed: Option<bool> =
                sqlx::query_scalar("SELECT last_error IS NOT NULL FROM emails")
                    .fetch_optional(pool)
                    .await
                    .expect("email");
            !smtp.messages().is_empty() || failed == Some(true)
        },
    )
    .await;
    let arrived = !smtp.messages().is_empty();
    (smtp, arrived)
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn order_emails_go_out_over_starttls_to_a_server_signed_by_smtp_ca_file(pool: PgPool) {
    let url = "smtp://localhost:PORT?tls=required";
    let (smtp, arrived) = send_over_tls(&pool, "--tlscert", url, true).await;
    assert!(arrived, "the email arrived over STARTTLS");
    assert!(header(&smtp.messages()[0], "Subject").contains("Your order is confirmed"));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn order_emails_go_out_over_implicit_tls_to_a_server_signed_by_smtp_ca_file(pool: PgPool) {
    let (smtp, arrived) = send_over_tls(&pool, "--smtpscert", "smtps://localhost:PORT", true).await;
    assert!(arrived, "the email arrived over implicit TLS");
    assert_eq!(smtp.messages().len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_server_whose_certificate_is_not_trusted_gets_no_email(pool: PgPool) {
    let (smtp, arrived) =
        send_over_tls(&pool, "--smtpscert", "smtps://localhost:PORT", false).await;
    assert!(!arrived && smtp.messages().is_empty());
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM emails")
        .fetch_one(&pool)
        .await
        .expect("email");
    let error = error.expect("the failure is recorded");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}
