//! A real `nats-server` on demand, for Herald's tests, examples and `herald dev`.
//!
//! [`LocalNats::start`] finds a nats-server (see [`find_or_install`]), starts it on
//! 127.0.0.1 with a free port, JetStream on and a temporary store, and returns once a client
//! can connect and JetStream answers. Dropping the [`LocalNats`] stops the processes it
//! started (by pid) and removes the store.
//!
//! ```no_run
//! # fn main() -> Result<(), herald_local_nats::Error> {
//! let nats = herald_local_nats::LocalNats::start()?;
//! println!("connect to {}", nats.url());
//! # Ok(()) }
//! ```
//!
//! A three-node JetStream cluster on loopback, with one node stopped and started again:
//!
//! ```no_run
//! # fn main() -> Result<(), herald_local_nats::Error> {
//! let mut cluster = herald_local_nats::LocalNats::cluster(3)?;
//! cluster.stop_node(2)?;
//! cluster.start_node(2)?;
//! # Ok(()) }
//! ```
//!
//! Environment: `NATS_SERVER_BIN` names the binary to use; `HERALD_CACHE_DIR` moves the
//! cache where the pinned server is installed (default `~/.cache/herald`). To use a server
//! of your own instead, tools built on this crate read `NATS_URL` (see [`url_from_env`]).

mod binary;
mod builder;
mod error;
mod probe;

use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use binary::{
    BinaryOrigin, MIN_VERSION, PINNED_VERSION, ServerBinary, Version, cache_dir, find_or_install,
};

/// How long [`LocalNats`] waits for a server to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub use builder::Builder;
pub use error::Error;
use error::io_error;

/// `NATS_URL` if it is set and not empty: the user's own server, to use instead of a local one.
pub fn url_from_env() -> Option<String> {
    std::env::var("NATS_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

#[derive(Debug)]
struct Node {
    name: String,
    dir: PathBuf,
    client_port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }
    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("server.conf")
    }
}

/// One local nats-server, or a cluster of them, started by this process.
#[derive(Debug)]
pub struct LocalNats {
    binary: ServerBinary,
    nodes: Vec<Node>,
    user_password: Option<(String, String)>,
    max_payload: Option<u32>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalNats {
    /// Starts one server with JetStream on a free port of 127.0.0.1 and a temporary store.
    pub fn start() -> Result<LocalNats, Error> {
        Builder::default().start()
    }

    /// Starts a JetStream cluster of `nodes` servers on loopback and returns once it can
    /// place a replicated stream on every node (at most 5 replicas).
    pub fn cluster(nodes: usize) -> Result<LocalNats, Error> {
        Builder::default().nodes(nodes).start()
    }

    /// Options: credentials, payload limit, a kept data folder, cluster size.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The client URL; for a cluster, every node's URL separated by commas.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of one node.
    pub fn node_url(&self, index: usize) -> Result<String, Error> {
        let node = self.node(index)?;
        Ok(format!("nats://127.0.0.1:{}", node.client_port))
    }

    /// The process ids of the running nodes (`None` for a stopped node).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    /// The binary in use.
    pub fn binary(&self) -> &ServerBinary {
        &self.binary
    }

    /// Where the JetStream store of node `index` is.
    pub fn store_dir(&self, index: usize) -> Result<PathBuf, Error> {
        Ok(self.node(index)?.dir.join("jetstream"))
    }

    /// Stops every node and starts it again with the same ports and store.
    pub fn restart(&mut self) -> Result<(), Error> {
        for index in 0..self.nodes.len() {
            self.stop_node(index)?;
        }
        self.start_all()
    }

    /// Stops node `index` gracefully (SIGTERM, then SIGKILL after 10 s), keeping its store.
    pub fn stop_node(&mut self, index: usize) -> Result<(), Error> {
        let count = self.nodes.len();
        let node = self
            .nodes
            .get_mut(index)
            .ok_or(Error::NoSuchNode { index, count })?;
        if let Some(child) = node.child.take() {
            stop_child(child, Duration::from_secs(10));
        }
        Ok(())
    }

    /// Starts node `index` again (after [`stop_node`](Self::stop_node)) and waits until it
    /// is ready and, once every node runs, until the cluster can place a stream on all of
    /// them again.
    pub fn start_node(&mut self, index: usize) -> Result<(), Error> {
        self.node(index)?;
        self.spawn(index)?;
        self.wait_ready(index)?;
        self.wait_whole()
    }

    fn node(&self, index: usize) -> Result<&Node, Error> {
        self.nodes.get(index).ok_or(Error::NoSuchNode {
            index,
            count: self.nodes.len(),
        })
    }

    fn start_all(&mut self) -> Result<(), Error> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                self.spawn(index)?;
            }
        }
        for index in 0..self.nodes.len() {
            self.wait_ready(index)?;
        }
        self.wait_whole()
    }

    /// For a cluster with every node running: waits until its JetStream group places a
    /// stream with a replica on each node (at most 5, the server's limit). Every node
    /// answering alone is not enough: until the meta leader has heard from all of them,
    /// creating a replicated stream fails with "no suitable peers for placement".
    fn wait_whole(&mut self) -> Result<(), Error> {
        let count = self.nodes.len();
        if count < 2 || self.nodes.iter().any(|node| node.child.is_none()) {
            return Ok(());
        }
        let replicas = count.min(5);
        self.poll(0, |addr, creds| probe::placement(addr, creds, replicas))
    }

    fn spawn(&mut self, index: usize) -> Result<(), Error> {
        let config = self.config(index);
        let node = &mut self.nodes[index];
        fs::create_dir_all(&node.dir)
            .map_err(io_error(format!("cannot create {}", node.dir.display())))?;
        fs::write(node.config_path(), config).map_err(io_error("cannot write the config"))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .map_err(io_error("cannot open the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("cannot open the server log"))?;
        let child = Command::new(&self.binary.path)
            .arg("-c")
            .arg(node.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error(format!(
                "cannot start {}",
                self.binary.path.display()
            )))?;
        node.child = Some(child);
        Ok(())
    }

    fn config(&self, index: usize) -> String {
        let node = &self.nodes[index];
        let quote = |path: &Path| {
            serde_json::to_string(&path.to_string_lossy()).unwrap_or_else(|_| "\"\"".into())
        };
        let mut config = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {store}\n}}\n",
            name = node.name,
            port = node.client_port,
            store = quote(&node.dir.join("jetstream")),
        );
        if let Some(max_payload) = self.max_payload {
            config.push_str(&format!("max_payload: {max_payload}\n"));
        }
        if let Some((user, password)) = &self.user_password {
            let user = serde_json::Value::from(user.as_str());
            let password = serde_json::Value::from(password.as_str());
            config.push_str(&format!(
                "authorization {{\n  user: {user}\n  password: {password}\n}}\n"
            ));
        }
        if self.nodes.len() > 1 {
            let routes = self
                .nodes
                .iter()
                .filter(|other| other.name != node.name)
                .map(|other| format!("\"nats-route://127.0.0.1:{}\"", other.cluster_port))
                .collect::<Vec<_>>()
                .join(", ");
            config.push_str(&format!(
                "cluster {{\n  name: herald-local\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n",
                node.cluster_port
            ));
        }
        config
    }

    fn wait_ready(&mut self, index: usize) -> Result<(), Error> {
        self.poll(index, probe::probe)
    }

    /// Runs `check` against node `index` until it is ready, the node exits, or
    /// [`READY_TIMEOUT`] passes.
    fn poll(
        &mut self,
        index: usize,
        check: impl Fn(SocketAddr, Option<(&str, &str)>) -> probe::Probe,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        let credentials = self
            .user_password
            .as_ref()
            .map(|(u, p)| (u.clone(), p.clone()));
        loop {
            let node = &mut self.nodes[index];
            let not_ready = |reason: String, node: &Node| Error::NotReady {
                name: node.name.clone(),
                reason,
                log: binary::last_lines(
                    &fs::read_to_string(node.log_path()).unwrap_or_default(),
                    8,
                ),
            };
            let Some(child) = node.child.as_mut() else {
                return Err(not_ready("it is not running".to_owned(), node));
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return Err(not_ready(format!("it exited with {status}"), node));
            }
            let creds = credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            match check(node.addr(), creds) {
                probe::Probe::Ready => return Ok(()),
                probe::Probe::Refused(reason) => return Err(not_ready(reason, node)),
                probe::Probe::NotYet(reason) if Instant::now() >= deadline => {
                    return Err(not_ready(
                        format!("still not ready after {READY_TIMEOUT:?}: {reason}"),
                        node,
                    ));
                }
                // Polling a condition with a deadline: the pause only spaces the attempts.
                probe::Probe::NotYet(_) => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // The store is thrown away, so there is nothing to flush: kill at once.
                if self._temp.is_some() {
                    let _ = child.kill();
                    let _ = child.wait();
                } else {
                    stop_child(child, Duration::from_secs(10));
                }
            }
        }
    }
}

/// Asks a child to stop with SIGTERM (by its pid), waits up to `grace`, then kills it.
fn stop_child(mut child: Child, grace: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port(held: &mut Vec<TcpListener>) -> Result<u16, Error> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(io_error("cannot find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_error("cannot find a free port"))?
        .port();
    held.push(listener);
    Ok(port)
}

/// The server an example or tool should use: the user's own (`NATS_URL`) or a local one
/// started here and stopped on drop.
#[derive(Debug)]
#[non_exhaustive]
pub enum NatsServer {
    /// The user's server, from `NATS_URL`.
    External(String),
    /// A local server started by this process.
    Local(LocalNats),
}

impl NatsServer {
    /// `NATS_URL` if set, else a freshly started local server.
    pub fn from_env_or_start() -> Result<NatsServer, Error> {
        match url_from_env() {
            Some(url) => Ok(NatsServer::External(url)),
            None => Ok(NatsServer::Local(LocalNats::start()?)),
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        match self {
            NatsServer::External(url) => url.clone(),
            NatsServer::Local(local) => local.url(),
        }
    }

    /// True when the server was started here.
    pub fn is_local(&self) -> bool {
        matches!(self, NatsServer::Local(_))
    }
}
