//! The services' log lines on stderr: text, coloured only when stderr is a terminal (a file or
//! the journal gets plain text), or one JSON object per line for log shippers, chosen with
//! `ORLY_LOG_FORMAT=text|json`.
//!
//! Owns: parsing that variable's value (the config module reads it) and building the `tracing`
//! layer that writes the lines. The filter and the exporters stay in `telemetry::init`.

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The variable that picks the log format.
pub const LOG_FORMAT_ENV: &str = "ORLY_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`, `spans`).
    Json,
}

impl LogFormat {
    /// Parses the variable's value; unset or empty is [`LogFormat::Text`].
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Self::Json),
            Some(v) => Err(format!(
                "{LOG_FORMAT_ENV}={v:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

static INSTALLED: OnceLock<LogFormat> = OnceLock::new();

/// The format this process logs in (what `telemetry::init` installed; text before that). The
/// launcher writes its services' lines in the same format.
pub(super) fn installed() -> LogFormat {
    INSTALLED.get().copied().unwrap_or_default()
}

/// The stderr layer for `format`, remembered as this process's format.
pub(super) fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let _ = INSTALLED.set(format);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_values() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some(" ")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Ok(LogFormat::Json));
        let err = LogFormat::parse(Some("jsno")).unwrap_err();
        assert!(
            err.contains("ORLY_LOG_FORMAT") && err.contains("jsno"),
            "{err}"
        );
    }
}
