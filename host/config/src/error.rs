//! The one error type of configuration loading.

use std::path::PathBuf;

/// Why a config file was refused. Every variant names the file; parse and
/// validation errors also name the key (a dotted path such as
/// `pools.web.instances[1].url`, or the offending line) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {error}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a wrongly typed value.
    #[error("{}: {}{message}", file.display(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// Where in the file, when the parser knows.
        key: Option<String>,
        /// The parser's reason.
        message: String,
    },
    /// The file parsed but says something impossible.
    #[error("{}: {key}: {reason}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}
