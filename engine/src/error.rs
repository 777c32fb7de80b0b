//! The engine's one error type. Caller mistakes (bad input, not found, conflict) are kept
//! apart from internal faults (storage, corruption) so the API can map them exhaustively.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or breaks a limit. Nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The named memory, event, session … does not exist (or no longer does).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. a memory that is being deleted).
    #[error("{0}")]
    Conflict(String),
    /// The write queue is full; the caller should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The storage backend failed (I/O, a failed commit). The write was not acknowledged.
    #[error("storage error in {path}: {message}")]
    Storage { path: PathBuf, message: String },
    /// Stored bytes could not be decoded: the data directory is damaged or was written by
    /// an incompatible version.
    #[error("corrupt data in {path}: {message}")]
    Corruption { path: PathBuf, message: String },
    /// The embedding model could not be loaded or run: a missing or unreadable model file,
    /// or a failure inside the model. An internal fault, never the caller's text.
    #[error("embedding model {path}: {message}")]
    Embed { path: PathBuf, message: String },
    /// The engine has been shut down.
    #[error("the engine is shut down")]
    Closed,
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Error {
        Error::NotFound(msg.into())
    }

    pub fn conflict(msg: impl Into<String>) -> Error {
        Error::Conflict(msg.into())
    }

    /// True for errors caused by the caller's request rather than by the engine.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_) | Error::NotFound(_) | Error::Conflict(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
