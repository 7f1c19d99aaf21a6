//! Readiness by speaking the NATS protocol: a server is ready when a client can connect
//! and JetStream answers an account-info request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What one readiness attempt found.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Connected and JetStream answered.
    Ready,
    /// Not yet: the reason, for the error message if the deadline passes.
    NotYet(String),
    /// The server refused our credentials: waiting will not help.
    Refused(String),
}

pub(crate) fn probe(addr: SocketAddr, credentials: Option<(&str, &str)>) -> Probe {
    match try_probe(addr, credentials) {
        Ok(probe) => probe,
        Err(error) => Probe::NotYet(error.to_string()),
    }
}

fn try_probe(addr: SocketAddr, credentials: Option<(&str, &str)>) -> std::io::Result<Probe> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("INFO") {
        return Ok(Probe::NotYet(format!(
            "unexpected greeting {:?}",
            line.trim()
        )));
    }
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
        "name": "herald-local-nats-probe", "lang": "rust", "version": "0",
    });
    if let Some((user, pass)) = credentials {
        connect["user"] = user.into();
        connect["pass"] = pass.into();
    }
    write!(
        writer,
        "CONNECT {connect}\r\nPING\r\nSUB _INBOX.herald_probe 1\r\nPUB $JS.API.INFO _INBOX.herald_probe 0\r\n\r\n"
    )?;
    writer.flush()?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(Probe::NotYet("connection closed".to_owned()));
        }
        let trimmed = line.trim_end();
        if trimmed == "PING" {
            writer.write_all(b"PONG\r\n")?;
        } else if let Some(error) = trimmed.strip_prefix("-ERR ") {
            if error.contains("Authorization") || error.contains("Authentication") {
                return Ok(Probe::Refused(error.to_owned()));
            }
            return Ok(Probe::NotYet(error.to_owned()));
        } else if let Some(rest) = trimmed.strip_prefix("HMSG ") {
            // A status message: 503 no responders means JetStream is not up yet.
            let total = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; total + 2];
            reader.read_exact(&mut body)?;
            return Ok(Probe::NotYet(format!(
                "JetStream did not answer ({})",
                String::from_utf8_lossy(&body)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            )));
        } else if let Some(rest) = trimmed.strip_prefix("MSG ") {
            let size = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; size + 2];
            reader.read_exact(&mut body)?;
            let reply: serde_json::Value =
                serde_json::from_slice(&body[..size]).unwrap_or(serde_json::Value::Null);
            if let Some(error) = reply.get("error") {
                return Ok(Probe::NotYet(format!("JetStream answered {error}")));
            }
            return Ok(Probe::Ready);
        }
    }
}
