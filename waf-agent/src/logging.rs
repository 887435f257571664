//! Log setup: tracing to stderr, plain or JSON, level from `PLEXICHAT_LOG_LEVEL`
//! (default info), and aya's `log` records bridged in.

use tracing_subscriber::{fmt, EnvFilter};

/// Initialises logging for the daemon.
pub fn init(level: &str, json: bool) {
    let level = if level == "warning" { "warn" } else { level };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,waf_agent={level}")));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn init_from_env() {
    let level = std::env::var(crate::config::env::LOG_LEVEL).unwrap_or_else(|_| "info".into());
    init(&level.to_ascii_lowercase(), false);
}
