//! Logging through `tracing`: plain or JSON lines on stderr (stdout is left to the `stdout`
//! event sink), filtered by `RUST_LOG` when set, else our crate at the configured level and
//! everything else at warn. `log` records (aya) are bridged in.

use std::sync::OnceLock;

use tracing_subscriber::{fmt, layer::Layered, prelude::*, reload, EnvFilter, Layer, Registry};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level is not one of trace, debug, info, warn(ing), error.
    #[error("{0:?} is not a log level")]
    Level(String),
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG does not parse")]
    Filter(#[source] tracing_subscriber::filter::ParseError),
    /// A global subscriber is already installed.
    #[error("logging is already set up")]
    AlreadySet(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `reload_logging` before `init_logging`, or the subscriber is gone.
    #[error("logging cannot be changed")]
    Reload(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The filter directive for `level`: our crate at that level, the rest at warn.
pub fn default_directive(level: &str) -> Result<String, LoggingError> {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" | "warn" => "warn".to_owned(),
        l @ ("trace" | "debug" | "info" | "error") => l.to_owned(),
        _ => return Err(LoggingError::Level(level.to_owned())),
    };
    Ok(format!("warn,waf_agent={level}"))
}

type FilterLayer = reload::Layer<EnvFilter, Registry>;
type Filtered = Layered<FilterLayer, Registry>;
type Output = Box<dyn Layer<Filtered> + Send + Sync>;

/// The handles a reload changes the level and the format through.
struct Handles {
    filter: reload::Handle<EnvFilter, Registry>,
    output: reload::Handle<Output, Filtered>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec).map_err(LoggingError::Filter),
        _ => EnvFilter::try_new(default_directive(level)?).map_err(LoggingError::Filter),
    }
}

fn output(json: bool) -> Output {
    let layer = fmt::layer().with_writer(std::io::stderr);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed()
    } else {
        layer.boxed()
    }
}

/// Installs the global subscriber. `level` comes from the config (`logging.level`, or
/// `PLEXICHAT_LOG_LEVEL`), `json` from `logging.format`.
pub fn init_logging(level: &str, json: bool) -> Result<(), LoggingError> {
    let (filter, filter_handle) = reload::Layer::new(filter(level)?);
    let (output, output_handle) = reload::Layer::new(output(json));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| LoggingError::AlreadySet(Box::new(e)))?;
    let _ = HANDLES.set(Handles {
        filter: filter_handle,
        output: output_handle,
    });
    Ok(())
}

/// Applies a reloaded level and format to the running subscriber.
pub fn reload_logging(level: &str, json: bool) -> Result<(), LoggingError> {
    let handles = HANDLES
        .get()
        .ok_or_else(|| LoggingError::Reload("logging was not set up by this process".into()))?;
    handles
        .filter
        .reload(filter(level)?)
        .map_err(|e| LoggingError::Reload(Box::new(e)))?;
    handles
        .output
        .reload(output(json))
        .map_err(|e| LoggingError::Reload(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_level_warning_maps_to_warn_for_our_crate() {
        assert_eq!(
            default_directive("warning").expect("a level"),
            "warn,waf_agent=warn"
        );
        assert_eq!(
            default_directive("INFO").expect("a level"),
            "warn,waf_agent=info"
        );
    }

    #[test]
    fn unknown_level_is_refused() {
        match default_directive("loud") {
            Err(LoggingError::Level(l)) => assert_eq!(l, "loud"),
            other => panic!("expected a level error, got {other:?}"),
        }
    }
}
