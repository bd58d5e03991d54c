//! Logging: pretty or JSON lines on the console, plus a daily-rotated JSON file of which
//! the newest `LOG_MAX_FILES` are kept.

use tracing_appender::{non_blocking::WorkerGuard, rolling};
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, LogSettings};

/// Keeps the file writer flushing; hold it until the process exits.
pub struct TelemetryGuard {
    _file: Option<WorkerGuard>,
}

/// Installs the global subscriber. `app` names the log file (`<app>.log.YYYY-MM-DD`).
pub fn init(settings: &LogSettings, app: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&settings.filter).map_err(|e| {
        anyhow::anyhow!("RUST_LOG {:?} is not a valid filter: {e}", settings.filter)
    })?;
    let console = match settings.format {
        LogFormat::Pretty => fmt::layer().with_target(false).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let (file_layer, guard) = match &settings.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create LOG_DIR {dir:?}: {e}"))?;
            let appender = rolling::Builder::new()
                .rotation(rolling::Rotation::DAILY)
                .filename_prefix(format!("{app}.log"))
                .max_log_files(settings.max_files.max(1))
                .build(dir)
                .map_err(|e| anyhow::anyhow!("cannot open a log file in LOG_DIR {dir:?}: {e}"))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(writer)
                .boxed();
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging was already initialised: {e}"))?;
    Ok(TelemetryGuard { _file: guard })
}
