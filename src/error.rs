//! The library's one error type and its mapping to `confd_errno`.

use crate::errcode::*;
use crate::proto::frame::FrameError;
use crate::proto::term::DecodeError;
use std::io;

/// Everything that can go wrong in a library call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `confd_init()` was not called first.
    #[error("library not initialized: call confd_init() first")]
    NotInitialized,
    /// A bad argument from the caller; `code` is the errno to report.
    #[error("{msg}")]
    Usage { code: i32, msg: String },
    /// A system call failed.
    #[error("{ctx}: {source}")]
    Os { ctx: String, source: io::Error },
    /// The daemon closed the socket.
    #[error("connection closed by the daemon")]
    Eof,
    /// The daemon refused the hello's protocol version (answer status 1);
    /// `why` says why the library did not adapt.
    #[error("daemon rejected library protocol version {proto} / {vsn:#010x} (daemon has {daemon_proto} / {daemon_vsn:#010x}){why}")]
    BadVersion {
        proto: u16,
        vsn: u32,
        daemon_proto: u16,
        daemon_vsn: u32,
        why: String,
    },
    /// The daemon refused the hello's keypath limits (answer status 2).
    #[error("daemon refused the hello: the library's MAXDEPTH/MAXKEYLEN {maxdepth}/{maxkeylen} (0 = no limit) are below what the daemon's data model needs (keypath depth {daemon_maxdepth}, keys {daemon_maxkeylen})")]
    BadSizes {
        maxdepth: u8,
        maxkeylen: u8,
        daemon_maxdepth: u8,
        daemon_maxkeylen: u8,
    },
    /// The daemon answered `{error, Code}` or `{error, Code, Reason}` (an
    /// empty reason for the 2-tuple).
    #[error("{reason}")]
    Remote { code: i32, reason: String },
    /// A reply that is not what the protocol allows.
    #[error("{0}")]
    Protocol(String),
    /// A bug or panic inside the library.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The `confd_errno` value for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotInitialized => CONFD_ERR_LIB_NOT_INITIALIZED,
            Error::Usage { code, .. } => *code,
            Error::Os { .. } => CONFD_ERR_OS,
            Error::Eof => CONFD_ERR_EOF,
            Error::BadVersion { .. } | Error::BadSizes { .. } => CONFD_ERR_PROTOUSAGE,
            Error::Remote { code, .. } => *code,
            Error::Protocol(_) => CONFD_ERR_PROTOUSAGE,
            Error::Internal(_) => CONFD_ERR_INTERNAL,
        }
    }

    /// True when the call should return `CONFD_EOF` rather than `CONFD_ERR`.
    pub fn is_eof(&self) -> bool {
        matches!(self, Error::Eof)
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage {
            code: CONFD_ERR_PROTOUSAGE,
            msg: msg.into(),
        }
    }

    pub fn os(ctx: impl Into<String>, source: io::Error) -> Error {
        Error::Os {
            ctx: ctx.into(),
            source,
        }
    }

    /// Maps an I/O error on an established connection: a reset or broken
    /// pipe means the daemon went away.
    pub fn from_io(ctx: &str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Error::Eof,
            _ => Error::os(ctx, e),
        }
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => Error::Eof,
            FrameError::TooLarge { .. } => Error::Protocol(e.to_string()),
            FrameError::Io(e) => Error::from_io("reading from the daemon", e),
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Protocol(format!("undecodable reply from the daemon: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn errno_mapping() {
        assert_eq!(Error::NotInitialized.errno(), 34);
        assert_eq!(Error::Eof.errno(), 45);
        assert!(Error::Eof.is_eof());
        assert_eq!(
            Error::Remote {
                code: 28,
                reason: "x".into()
            }
            .errno(),
            28
        );
        assert_eq!(Error::from(FrameError::Closed).errno(), 45);
        assert_eq!(
            Error::from_io("w", io::ErrorKind::BrokenPipe.into()).errno(),
            45
        );
        assert_eq!(
            Error::from_io("w", io::ErrorKind::PermissionDenied.into()).errno(),
            24
        );
    }
}
