//! The crate's error type: every variant names the file or key involved and, where
//! there is one, what the user can do about it.

use std::path::PathBuf;

/// Errors from any stage of the weightmap pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file's content is not any format weightmap reads.
    #[error("{path}: {message}")]
    UnknownFormat {
        /// The file involved.
        path: PathBuf,
        /// What was found instead.
        message: String,
    },
    /// The file is of a known format but damaged, truncated or inconsistent.
    #[error("{path}: corrupt {format}: {message}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// The format it claims to be.
        format: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The file is valid but uses a feature weightmap does not support.
    #[error("{path}: unsupported: {message}")]
    Unsupported {
        /// The file involved.
        path: PathBuf,
        /// What is not supported, and what to do instead.
        message: String,
    },
    /// libtorch reported an error (loading a TorchScript model, running forward).
    #[error("{context}: libtorch: {message}")]
    Torch {
        /// What weightmap was doing (usually the file).
        context: String,
        /// libtorch's message, on one line.
        message: String,
    },
    /// The work needs libtorch (a TorchScript model loaded or traced, a forward pass, a CUDA
    /// device), and this weightmap was built without it (cargo feature `libtorch`). The
    /// `weightmap` binary hands such a command to its libtorch build (`weightmap-torch`).
    #[error("{what} needs libtorch, and this weightmap was built without it (cargo feature `libtorch`): build it with the feature (`cargo build --release`, or scripts/build.sh for both binaries)")]
    NeedsLibtorch {
        /// What needs it, naming the file.
        what: String,
        /// When a model's execution order is what needs it, after a first mapping without
        /// the order: what that mapping left for the order to settle. The libtorch build,
        /// told so (the map request's `order_needed`), traces at once instead of mapping
        /// first again.
        order_needed: Option<String>,
    },
    /// A requested key (state dict, tensor name) does not exist.
    #[error("{context}: no key '{key}'{hint}")]
    MissingKey {
        /// Where the key was looked up (usually the file).
        context: String,
        /// The missing key.
        key: String,
        /// Suggestions ("; did you mean ...") or the empty string.
        hint: String,
    },
    /// Shapes or dtypes do not agree.
    #[error("{context}: {message}")]
    Mismatch {
        /// Where (file and key).
        context: String,
        /// What does not agree.
        message: String,
    },
    /// An option or argument value is invalid.
    #[error("invalid {what}: {message}")]
    InvalidArgument {
        /// The option or argument.
        what: String,
        /// Why, and what is accepted.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt-file error on `path` for `format`.
    pub fn corrupt(
        path: impl Into<PathBuf>,
        format: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            format,
            message: message.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            message: message.into(),
        }
    }
}
