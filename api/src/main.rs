//! `api` binary: loads settings, starts telemetry and runs the chosen command.

use anyhow::Context;
use api::{
    application::Application,
    cli::{Cli, Command},
};
use clap::Parser;
use common::{config::Settings, db, metrics, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc returns freed memory to the system within milliseconds. With glibc's allocator
/// each 19 MiB argon2 buffer stayed in its thread's arena: 30 sign-ins left the api at
/// 232 MiB; see `bench/login_burst.sh`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks the kernel for transparent huge pages for its arenas, and where they are
/// granted every touched 2 MiB region is resident in full: measured idle 39 → 37 MiB and
/// peak 61–63 → 57–59 MiB across a sign-in and 5 s of orders (what mimalloc touched before
/// `main` keeps its huge pages). Small pages keep the api's resident memory what it
/// actually uses; orders per second were the same.
#[cfg(target_os = "linux")]
fn use_small_pages() {
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: transparent huge pages stay on ({error}); memory use will be higher");
    }
}

#[tokio::main]
async fn main() {
    #[cfg(target_os = "linux")]
    use_small_pages();
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let pool = db::connect(&settings.database).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::CreateUser {
            role,
            email,
            username,
            full_name,
        } => api::cli::create_user(&settings, &role, email, username, full_name).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    settings.check_signing_key()?;
    let _telemetry = telemetry::init(&settings.log, "api")?;
    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool).await?;
    let address = format!("{}:{}", settings.http.host, settings.http.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| {
            format!("cannot listen on {address}: is another process using the port? set HOST/PORT")
        })?;
    let metrics_listener = match &settings.metrics.api_addr {
        Some(address) => Some(metrics::listen(address).await?),
        None => None,
    };
    let app = Application::build(pool, settings, listener)?;
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signal(shutdown.clone());
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics::serve(listener, shutdown.clone()));
    }
    tracing::info!(%address, "orderflow api listening; docs at /docs");
    app.run(shutdown).await?;
    tracing::info!("api stopped");
    Ok(())
}
