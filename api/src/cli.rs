//! Command line: `serve` (the default), `migrate`, and `create-user` for operators.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::{config::Settings, db, domain::Role};

use crate::{
    accounts::{self, NewUser},
    auth::password,
    error::ApiError,
};

#[derive(Debug, Parser)]
#[command(name = "api", version, about = "Orderflow HTTP API and outbox relay")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve HTTP and relay the outbox (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a user of any role, e.g. the first admin. The password comes from
    /// ADMIN_PASSWORD or, when unset, the first line of standard input.
    CreateUser {
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        full_name: Option<String>,
    },
}

/// Creates a user from the command line, printing its id.
pub async fn create_user(
    settings: &Settings,
    role: &str,
    email: String,
    username: String,
    full_name: Option<String>,
) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let password = read_password()?;
    accounts::validate_new_account(&email, &username, &password, full_name.as_deref())
        .map_err(describe)?;
    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool).await?;
    let password_hash = password::hash(password).await?;
    let mut conn = pool.acquire().await?;
    let user = accounts::insert(
        &mut conn,
        NewUser {
            email,
            username,
            full_name,
            password_hash,
            role,
        },
    )
    .await
    .map_err(describe)?;
    println!("created {} {} ({})", role.as_str(), user.username, user.id);
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("ADMIN_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        // Typed at a terminal: not echoed.
        rpassword::prompt_password("password: ").context("reading the password")?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(
        !password.is_empty(),
        "no password: set ADMIN_PASSWORD or pipe it on stdin"
    );
    Ok(password)
}

/// Turns an API error into a message for an operator.
fn describe(error: ApiError) -> anyhow::Error {
    match error {
        ApiError::Validation(errors) => anyhow::anyhow!(
            "invalid input: {}",
            errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        ApiError::Conflict { detail, .. } => anyhow::anyhow!(detail),
        other => anyhow::Error::new(other),
    }
}
