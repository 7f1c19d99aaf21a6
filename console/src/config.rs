//! The console's settings and the loopback rule.

use std::net::SocketAddr;

/// The cookie that carries the console's token once `/?token=…` was opened.
pub const TOKEN_COOKIE: &str = "herald_console_token";

/// How a console behaves.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// Hide every action (redrive, replay, cancel, send, purge) and refuse them.
    pub read_only: bool,
    /// A secret every request must carry (cookie, `?token=`, or `Authorization: Bearer`).
    /// Required to listen on anything but a loopback address.
    pub token: Option<String>,
}

/// A console may not listen there.
#[derive(Debug, thiserror::Error)]
#[error(
    "the console would listen on {address}, which is not a loopback address, without a token: anyone who reaches it could redrive, purge and send events; give a token (--token) or listen on 127.0.0.1"
)]
pub struct ListenError {
    /// The refused address.
    pub address: SocketAddr,
}

impl ConsoleConfig {
    /// Refuses a non-loopback `address` unless a token is configured.
    pub fn check_listen(&self, address: SocketAddr) -> Result<(), ListenError> {
        if address.ip().is_loopback() || self.token.as_deref().is_some_and(|t| !t.is_empty()) {
            Ok(())
        } else {
            Err(ListenError { address })
        }
    }

    /// The URL to open: `http://address/`, with `?token=…` when a token is configured.
    pub fn url(&self, address: SocketAddr) -> String {
        match self.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => format!("http://{address}/?token={token}"),
            None => format!("http://{address}/"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_open_without_a_token() {
        let open = ConsoleConfig::default();
        assert!(open.check_listen("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(open.check_listen("[::1]:1".parse().unwrap()).is_ok());
        let public: SocketAddr = "0.0.0.0:8289".parse().unwrap();
        assert!(open.check_listen(public).is_err());
        let with_token = ConsoleConfig {
            token: Some("s3cret".into()),
            ..Default::default()
        };
        assert!(with_token.check_listen(public).is_ok());
        assert_eq!(with_token.url(public), "http://0.0.0.0:8289/?token=s3cret");
    }
}
