//! The mailer: sends the order emails the worker recorded with each status change, over
//! SMTP or into a folder of `.eml` files. Any number of workers share the work (rows are
//! claimed with `SKIP LOCKED` for `EMAIL_CLAIM_SECS`); a failed send is retried with
//! back-off for about a day (configurable) and never holds up the orders themselves. A
//! worker killed mid-send lets its claim lapse and the email is sent again, with the same
//! Message-ID.

mod message;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use common::config::{EmailSettings, Settings};
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::client::{Certificate, Tls, TlsParameters},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use message::{DueEmail, Line, Templates};

/// Emails claimed per round.
const BATCH: i64 = 20;
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the mailer looks for due emails when the last round found few.
const POLL: Duration = Duration::from_secs(1);

/// Where the messages go.
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// Why a send failed, and whether trying again can help.
struct Failure {
    reason: String,
    permanent: bool,
}

impl Transport {
    fn from_settings(settings: &EmailSettings) -> anyhow::Result<Option<Self>> {
        if let Some(url) = &settings.smtp_url {
            let mut smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                .context("SMTP_URL is not a valid SMTP address (smtps://user:password@host:465)")?
                .timeout(Some(SMTP_TIMEOUT));
            if let Some(ca_file) = &settings.smtp_ca_file {
                smtp = smtp.tls(trusting(url.expose(), ca_file)?);
            }
            return Ok(Some(Self::Smtp(smtp.build())));
        }
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create EMAIL_DIR {}", dir.display()))?;
            return Ok(Some(Self::Files(AsyncFileTransport::new(dir))));
        }
        Ok(None)
    }

    async fn send(&self, message: Message) -> Result<(), Failure> {
        match self {
            Self::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|e| Failure {
                permanent: e.is_permanent(),
                reason: e.to_string(),
            }),
            Self::Files(files) => files.send(message).await.map(drop).map_err(|e| Failure {
                permanent: false,
                reason: e.to_string(),
            }),
        }
    }
}

/// The TLS mode `url` asks for, trusting the certificates in `ca_file` too.
fn trusting(url: &str, ca_file: &std::path::Path) -> anyhow::Result<Tls> {
    let url = reqwest::Url::parse(url).context("SMTP_URL is not a URL")?;
    let host = url.host_str().context("SMTP_URL names no host")?;
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("cannot read SMTP_CA_FILE {}", ca_file.display()))?;
    let certificate = Certificate::from_pem(&pem).with_context(|| {
        format!(
            "SMTP_CA_FILE {} is not a PEM certificate",
            ca_file.display()
        )
    })?;
    let parameters = TlsParameters::builder(host.to_owned())
        .add_root_certificate(certificate)
        .build()
        .context("setting up TLS for SMTP")?;
    let tls_query = url
        .query_pairs()
        .find(|(key, _)| key == "tls")
        .map(|(_, value)| value.into_owned());
    Ok(match (url.scheme(), tls_query.as_deref()) {
        ("smtps", _) => Tls::Wrapper(parameters),
        (_, Some("required")) => Tls::Required(parameters),
        (_, Some("opportunistic")) => Tls::Opportunistic(parameters),
        _ => anyhow::bail!(
            "SMTP_CA_FILE is set but SMTP_URL asks for no TLS: use smtps://… or smtp://…?tls=required"
        ),
    })
}

pub struct Mailer {
    pool: PgPool,
    settings: Arc<Settings>,
    transport: Transport,
    templates: Templates,
}

impl Mailer {
    /// Fails when the email settings cannot work (an SMTP_URL lettre cannot read, an
    /// EMAIL_DIR that cannot be created), so a worker refuses to start rather than letting
    /// emails pile up unsent.
    pub fn check(settings: &EmailSettings) -> anyhow::Result<()> {
        Transport::from_settings(settings)?;
        Ok(())
    }

    /// The mailer for these settings; `None` when neither an SMTP server nor a folder is
    /// configured (the emails wait in the table until one is).
    pub fn new(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<Option<Self>> {
        let Some(transport) = Transport::from_settings(&settings.email)? else {
            return Ok(None);
        };
        let templates = Templates::new().context("the email templates do not parse")?;
        Ok(Some(Self {
            pool,
            settings,
            transport,
            templates,
        }))
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            let sent = match self.round().await {
                Ok(sent) => sent,
                Err(error) => {
                    tracing::warn!(%error, "mailer round failed; the next one retries");
                    0
                }
            };
            if stop.is_cancelled() {
                break;
            }
            if sent < BATCH as usize {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Claims due emails and sends them one after the other; returns how many it claimed.
    /// An email whose claim would lapse before a send could time out is not sent by this
    /// round but handed back at once, so a slow server never has two mailers send it.
    async fn round(&self) -> sqlx::Result<usize> {
        let claim = self.settings.email.claim;
        let send_by = Instant::now() + claim.saturating_sub(SMTP_TIMEOUT);
        let due: Vec<DueEmail> = sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM emails
                 WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE emails e SET next_attempt_at = now() + make_interval(secs => $2)
                 FROM due WHERE e.id = due.id
                 RETURNING e.id, e.order_id, e.status, e.recipient, e.message, e.tracking_number,
                           e.payment_kind, e.payment_amount_minor, e.amount_paid_minor,
                           e.amount_refunded_minor
             )
             SELECT c.id, c.order_id, c.status, c.recipient, c.message, o.customer_name,
                    c.tracking_number, o.currency, o.total_amount_minor, c.payment_kind,
                    c.payment_amount_minor, c.amount_paid_minor, c.amount_refunded_minor
             FROM claimed c JOIN orders o ON o.id = c.order_id ORDER BY c.id",
        )
        .bind(BATCH)
        .bind(claim.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        for (sent, email) in due.iter().enumerate() {
            if sent > 0 && Instant::now() > send_by {
                let rest: Vec<Uuid> = due[sent..].iter().map(|email| email.id).collect();
                sqlx::query("UPDATE emails SET next_attempt_at = now() WHERE id = ANY($1)")
                    .bind(rest)
                    .execute(&self.pool)
                    .await?;
                break;
            }
            self.deliver(email).await?;
        }
        Ok(due.len())
    }

    async fn deliver(&self, due: &DueEmail) -> sqlx::Result<()> {
        let lines: Vec<Line> = sqlx::query_as(
            "SELECT product_name, quantity, total_price_minor FROM order_items
             WHERE order_id = $1 ORDER BY product_sku COLLATE \"C\"",
        )
        .bind(due.order_id)
        .fetch_all(&self.pool)
        .await?;
        let outcome = match self.templates.message(&self.settings.email, due, &lines) {
            Ok(message) => self.transport.send(message).await,
            Err(reason) => Err(Failure {
                reason,
                permanent: true,
            }),
        };
        match outcome {
            Ok(()) => {
                sqlx::query("UPDATE emails SET sent_at = now(), last_error = NULL WHERE id = $1")
                    .bind(due.id)
                    .execute(&self.pool)
                    .await?;
                metrics::counter!("orderflow_emails_total", "outcome" => "sent").increment(1);
            }
            Err(failure) => self.record_failure(due.id, failure).await?,
        }
        Ok(())
    }

    /// Backs the email off (`EMAIL_RETRY_FIRST_MS`, doubling, at most `EMAIL_RETRY_MAX_MS`),
    /// or gives up on it: at once when it can never be sent, or once it has been failing for
    /// `EMAIL_GIVE_UP_HOURS`.
    async fn record_failure(&self, id: Uuid, failure: Failure) -> sqlx::Result<()> {
        let email = &self.settings.email;
        let given_up: bool = sqlx::query_scalar(
            "UPDATE emails SET attempts = attempts + 1, last_error = $2,
                 next_attempt_at = now() + make_interval(secs => least($3 * 2 ^ attempts, $4)),
                 given_up_at = CASE WHEN $5 OR created_at < now() - make_interval(secs => $6)
                                    THEN now() END
             WHERE id = $1 RETURNING given_up_at IS NOT NULL",
        )
        .bind(id)
        .bind(&failure.reason)
        .bind(email.retry_first.as_secs_f64())
        .bind(email.retry_max.as_secs_f64())
        .bind(failure.permanent)
        .bind(email.give_up_after.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        let outcome = if given_up { "given_up" } else { "retry" };
        tracing::warn!(email_id = %id, reason = %failure.reason, given_up, "order email not sent");
        metrics::counter!("orderflow_emails_total", "outcome" => outcome).increment(1);
        Ok(())
    }
}
