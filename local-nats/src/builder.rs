//! [`Builder`]: the options of a local server or cluster.

use std::fs;
use std::path::PathBuf;

use crate::error::io_error;
use crate::{Error, LocalNats, Node, find_or_install, free_port};

/// Options for a local server or cluster; see [`LocalNats::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    nodes: usize,
    user_password: Option<(String, String)>,
    max_payload: Option<u32>,
    data_dir: Option<PathBuf>,
    port: Option<u16>,
}

impl Builder {
    /// Requires clients to log in with this user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// Sets the server's `max_payload` in bytes (default 1 MiB).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Keeps the JetStream store in this folder (kept after drop) instead of a temporary one.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Listens for clients on this port instead of a free one (single node only).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs `nodes` servers as one JetStream cluster (routes on loopback).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Starts the server(s) and waits until each accepts clients and JetStream answers; for
    /// a cluster, also until a stream can be placed with a replica on every node.
    pub fn start(self) -> Result<LocalNats, Error> {
        let binary = find_or_install()?;
        let node_count = self.nodes.max(1);
        let (store_root, temp) = match &self.data_dir {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .map_err(io_error(format!("cannot create {}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("herald-nats-")
                    .tempdir()
                    .map_err(io_error("cannot create a temporary store folder"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        // A free port can be taken by someone else between our probe and the server's bind:
        // then the server exits at once and we try again with fresh ports.
        let mut last_error = None;
        for _ in 0..5 {
            let mut nodes = Vec::with_capacity(node_count);
            // Held until every port is chosen, so two nodes never get the same one.
            let mut held = Vec::new();
            for index in 0..node_count {
                let client_port = match self.port {
                    Some(port) if node_count == 1 => port,
                    _ => free_port(&mut held)?,
                };
                let cluster_port = if node_count > 1 {
                    free_port(&mut held)?
                } else {
                    0
                };
                let name = if node_count > 1 {
                    format!("herald-n{index}")
                } else {
                    "herald-local".to_owned()
                };
                nodes.push(Node {
                    dir: store_root.join(&name),
                    name,
                    client_port,
                    cluster_port,
                    child: None,
                });
            }
            drop(held);
            let mut local = LocalNats {
                binary: binary.clone(),
                nodes,
                user_password: self.user_password.clone(),
                max_payload: self.max_payload,
                _temp: None,
            };
            match local.start_all() {
                Ok(()) => {
                    local._temp = temp;
                    return Ok(local);
                }
                Err(error) => {
                    let retry = matches!(&error, Error::NotReady { log, .. }
                        if log.contains("address already in use"))
                        && self.port.is_none();
                    drop(local);
                    if !retry {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotReady {
            name: "herald-local".to_owned(),
            reason: "no free port".to_owned(),
            log: String::new(),
        }))
    }
}
