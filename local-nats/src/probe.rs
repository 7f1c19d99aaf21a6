//! Readiness by speaking the NATS protocol: a server is ready when a client can connect
//! and JetStream answers an account-info request; a cluster is whole when its JetStream
//! group can place a stream on every node.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What one readiness attempt found.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Connected and JetStream answered (or placed the probe stream).
    Ready,
    /// Not yet: the reason, for the error message if the deadline passes.
    NotYet(String),
    /// The server refused our credentials: waiting will not help.
    Refused(String),
}

/// The stream created (and deleted at once) to see that a cluster can place replicas.
const PLACEMENT_STREAM: &str = "HERALD_LOCAL_NATS_READY";

/// Whether the server at `addr` accepts a client and its JetStream answers.
pub(crate) fn probe(addr: SocketAddr, credentials: Option<(&str, &str)>) -> Probe {
    with_conn(addr, credentials, |conn| {
        Ok(match conn.request("$JS.API.INFO", b"")? {
            Ok(reply) => match reply.get("error") {
                Some(error) => Probe::NotYet(format!("JetStream answered {error}")),
                None => Probe::Ready,
            },
            Err(probe) => probe,
        })
    })
}

/// Whether the cluster reached through `addr` places a stream with `replicas` replicas: a
/// JetStream group that has not heard from every server yet answers "no suitable peers for
/// placement" although each server, asked alone, is up. The probe stream (memory, 1 KiB) is
/// deleted again before this returns `Ready`.
pub(crate) fn placement(
    addr: SocketAddr,
    credentials: Option<(&str, &str)>,
    replicas: usize,
) -> Probe {
    with_conn(addr, credentials, |conn| {
        let config = serde_json::json!({
            "name": PLACEMENT_STREAM,
            "subjects": [PLACEMENT_STREAM.to_ascii_lowercase()],
            "storage": "memory",
            "num_replicas": replicas,
            "max_bytes": 1024,
        });
        let create = format!("$JS.API.STREAM.CREATE.{PLACEMENT_STREAM}");
        match conn.request(&create, config.to_string().as_bytes())? {
            Ok(reply) => {
                if let Some(error) = reply.get("error") {
                    return Ok(Probe::NotYet(format!(
                        "placing {replicas} replicas: {error}"
                    )));
                }
            }
            Err(probe) => return Ok(probe),
        }
        let delete = format!("$JS.API.STREAM.DELETE.{PLACEMENT_STREAM}");
        Ok(match conn.request(&delete, b"")? {
            Ok(reply) => match reply.get("error") {
                // Not found: deleted already, by an earlier attempt whose answer was lost.
                Some(error) if error.get("err_code") == Some(&10059.into()) => Probe::Ready,
                Some(error) => Probe::NotYet(format!("deleting the probe stream: {error}")),
                None => Probe::Ready,
            },
            Err(probe) => probe,
        })
    })
}

/// Connects and runs `steps`; an I/O error (refused, timed out) means "not yet".
fn with_conn(
    addr: SocketAddr,
    credentials: Option<(&str, &str)>,
    steps: impl FnOnce(&mut Conn) -> std::io::Result<Probe>,
) -> Probe {
    let outcome = Conn::open(addr, credentials).and_then(|conn| match conn {
        Ok(mut conn) => steps(&mut conn),
        Err(probe) => Ok(probe),
    });
    outcome.unwrap_or_else(|error| Probe::NotYet(error.to_string()))
}

/// One plain NATS connection with a single reply subscription.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

const INBOX: &str = "_INBOX.herald_probe";

impl Conn {
    /// Connects and subscribes to the reply subject; `Err(probe)` inside when the server
    /// greeted oddly.
    fn open(
        addr: SocketAddr,
        credentials: Option<(&str, &str)>,
    ) -> std::io::Result<Result<Conn, Probe>> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.starts_with("INFO") {
            return Ok(Err(Probe::NotYet(format!(
                "unexpected greeting {:?}",
                line.trim()
            ))));
        }
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
            "name": "herald-local-nats-probe", "lang": "rust", "version": "0",
        });
        if let Some((user, pass)) = credentials {
            connect["user"] = user.into();
            connect["pass"] = pass.into();
        }
        write!(writer, "CONNECT {connect}\r\nPING\r\nSUB {INBOX} 1\r\n")?;
        writer.flush()?;
        Ok(Ok(Conn {
            reader,
            writer,
            line,
        }))
    }

    /// Publishes `body` to `subject` and reads the first answer on the reply subject: its
    /// JSON, or why there is none (a status such as 503 no responders, `-ERR`, a closed
    /// connection) as the probe's outcome.
    fn request(
        &mut self,
        subject: &str,
        body: &[u8],
    ) -> std::io::Result<Result<serde_json::Value, Probe>> {
        write!(self.writer, "PUB {subject} {INBOX} {}\r\n", body.len())?;
        self.writer.write_all(body)?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                return Ok(Err(Probe::NotYet("connection closed".to_owned())));
            }
            let trimmed = self.line.trim_end();
            if trimmed == "PING" {
                self.writer.write_all(b"PONG\r\n")?;
            } else if let Some(error) = trimmed.strip_prefix("-ERR ") {
                let error = error.to_owned();
                if error.contains("Authorization") || error.contains("Authentication") {
                    return Ok(Err(Probe::Refused(error)));
                }
                return Ok(Err(Probe::NotYet(error)));
            } else if let Some(rest) = trimmed.strip_prefix("HMSG ") {
                // Headers only, on this subscription: a status such as 503 no responders.
                let size = payload_size(rest);
                let body = self.body(size)?;
                let status = String::from_utf8_lossy(&body);
                let status = status.lines().next().unwrap_or("").trim().to_owned();
                return Ok(Err(Probe::NotYet(format!(
                    "JetStream did not answer ({status})"
                ))));
            } else if let Some(rest) = trimmed.strip_prefix("MSG ") {
                let size = payload_size(rest);
                let body = self.body(size)?;
                let reply = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                return Ok(Ok(reply));
            }
        }
    }

    /// Reads a payload of `size` bytes and its line end.
    fn body(&mut self, size: usize) -> std::io::Result<Vec<u8>> {
        let mut body = vec![0; size + 2];
        self.reader.read_exact(&mut body)?;
        body.truncate(size);
        Ok(body)
    }
}

/// The payload size a `MSG`/`HMSG` line announces in its last field.
fn payload_size(rest: &str) -> usize {
    rest.rsplit(' ')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
}
