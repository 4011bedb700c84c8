//! The crate's error type. Library code returns `Result<T>`; only the binary turns these into
//! `anyhow` reports. Every variant names what went wrong and where, so that a one-line message
//! is enough for the user.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two tensors (or a tensor and a declared shape) do not fit together.
    #[error("{op}: shape mismatch: expected {expected:?}, got {got:?}")]
    Shape {
        op: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A file could not be read or written. (The io error is part of the message, not a
    /// `source`, so that reports chaining sources do not print it twice.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A data file is readable but its content is wrong (bad magic, truncated, bad label...).
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// A checkpoint or tensor file does not match what the model expects.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The requested device cannot be used.
    #[error("device {device}: {msg}")]
    Device { device: String, msg: String },
    /// Training was stopped by Ctrl-C or SIGTERM: where, and how to go on.
    #[error("interrupted {0}")]
    Interrupted(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
