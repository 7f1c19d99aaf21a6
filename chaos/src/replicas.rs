//! The worker replicas: child processes started, killed and stopped by pid.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

use crate::ChaosError;

/// How long a SIGTERMed replica may take to exit: the worker's shutdown grace (30 s) plus
/// the 10 s it waits for handed-back handlers, plus a margin.
const TERM_DEADLINE: Duration = Duration::from_secs(45);

/// How a replica is started.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaSpec {
    pub(crate) binary: PathBuf,
    pub(crate) server_url: String,
    pub(crate) namespace: String,
    pub(crate) ack_wait: Duration,
    pub(crate) log_dir: PathBuf,
}

/// A replica that exited without being signalled by the harness.
#[derive(Debug, Clone)]
pub struct SelfExit {
    /// The replica's number (1, 2, … in start order).
    pub replica: usize,
    /// Its process id.
    pub pid: u32,
    /// How it exited (`exit status: 1`, `signal: 6`, …).
    pub status: String,
    /// How long after its start.
    pub after: Duration,
    /// The last lines of its log.
    pub log_tail: String,
    /// Its log file.
    pub log: PathBuf,
}

/// What a replica did after the harness sent it SIGTERM.
#[derive(Debug, Clone)]
pub struct TermOutcome {
    /// The replica's number.
    pub replica: usize,
    /// Its process id.
    pub pid: u32,
    /// Its exit code; `None` when it died of a signal or had to be killed.
    pub code: Option<i32>,
    /// How it exited, in words.
    pub status: String,
    /// From SIGTERM to exit.
    pub took: Duration,
    /// The last lines of its log, when it did not exit 0.
    pub log_tail: Option<String>,
}

impl TermOutcome {
    /// True when the replica exited 0.
    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug)]
struct Replica {
    number: usize,
    child: Child,
    // Held open so the replica's `--exit-with-parent` sees its parent alive.
    _stdin: Option<ChildStdin>,
    log: PathBuf,
    started: Instant,
}

impl Replica {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

#[derive(Debug)]
struct Terminating {
    replica: Replica,
    since: Instant,
    final_stop: bool,
}

/// The running replicas and what happened to those that stopped.
#[derive(Debug)]
pub(crate) struct Replicas {
    spec: ReplicaSpec,
    started: usize,
    live: Vec<Replica>,
    terminating: Vec<Terminating>,
    pub(crate) kills: usize,
    pub(crate) self_exits: Vec<SelfExit>,
    pub(crate) terms: Vec<TermOutcome>,
    pub(crate) final_terms: Vec<TermOutcome>,
}

impl Replicas {
    pub(crate) fn new(spec: ReplicaSpec) -> Replicas {
        Replicas {
            spec,
            started: 0,
            live: Vec::new(),
            terminating: Vec::new(),
            kills: 0,
            self_exits: Vec::new(),
            terms: Vec::new(),
            final_terms: Vec::new(),
        }
    }

    /// How many replicas were started in all.
    pub(crate) fn started(&self) -> usize {
        self.started
    }

    /// The last lines of every live replica's log, for an error message.
    pub(crate) fn live_log_tails(&self) -> String {
        self.live
            .iter()
            .map(|r| {
                format!(
                    "replica {} (pid {}):\n{}",
                    r.number,
                    r.pid(),
                    log_tail(&r.log)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts one more replica; returns its number and pid.
    pub(crate) fn start(&mut self) -> Result<(usize, u32), ChaosError> {
        let number = self.started + 1;
        let log = self.spec.log_dir.join(format!("replica-{number}.log"));
        let spawn_error = |source| ChaosError::SpawnWorker {
            binary: self.spec.binary.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(spawn_error)?;
        let file_err = file.try_clone().map_err(spawn_error)?;
        let mut child = Command::new(&self.spec.binary)
            .arg("--server")
            .arg(&self.spec.server_url)
            .arg("--namespace")
            .arg(&self.spec.namespace)
            .arg("--ack-wait")
            .arg(self.spec.ack_wait.as_secs().max(1).to_string())
            .arg("--exit-with-parent")
            .env_remove("NATS_URL")
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(file_err)
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        let pid = child.id();
        self.started = number;
        self.live.push(Replica {
            number,
            child,
            _stdin: stdin,
            log,
            started: Instant::now(),
        });
        tracing::info!(replica = number, pid, "started a chaos-worker replica");
        Ok((number, pid))
    }

    /// Notices replicas that exited: live ones (an exit on their own, a failure) and
    /// SIGTERMed ones (their exit status). A SIGTERMed replica still running after
    /// [`TERM_DEADLINE`] is killed and recorded as not exiting. Returns how many live
    /// replicas exited on their own.
    pub(crate) fn check(&mut self) -> usize {
        let mut exited = 0;
        let mut index = 0;
        while index < self.live.len() {
            match self.live[index].child.try_wait() {
                Ok(Some(status)) => {
                    let replica = self.live.swap_remove(index);
                    let exit = SelfExit {
                        replica: replica.number,
                        pid: replica.pid(),
                        status: status.to_string(),
                        after: replica.started.elapsed(),
                        log_tail: log_tail(&replica.log),
                        log: replica.log.clone(),
                    };
                    tracing::error!(replica = exit.replica, pid = exit.pid, status = exit.status,
                        log = %exit.log.display(), "a replica exited on its own");
                    self.self_exits.push(exit);
                    exited += 1;
                }
                Ok(None) | Err(_) => index += 1,
            }
        }
        let mut index = 0;
        while index < self.terminating.len() {
            let entry = &mut self.terminating[index];
            let outcome = match entry.replica.child.try_wait() {
                Ok(Some(status)) => Some((status.code(), status.to_string())),
                Ok(None) | Err(_) if entry.since.elapsed() > TERM_DEADLINE => {
                    let _ = entry.replica.child.kill();
                    let _ = entry.replica.child.wait();
                    Some((
                        None,
                        format!("still running {TERM_DEADLINE:?} after SIGTERM; killed"),
                    ))
                }
                Ok(None) | Err(_) => None,
            };
            let Some((code, status)) = outcome else {
                index += 1;
                continue;
            };
            let entry = self.terminating.swap_remove(index);
            let outcome = TermOutcome {
                replica: entry.replica.number,
                pid: entry.replica.pid(),
                code,
                status,
                took: entry.since.elapsed(),
                log_tail: (code != Some(0)).then(|| log_tail(&entry.replica.log)),
            };
            tracing::info!(
                replica = outcome.replica,
                pid = outcome.pid,
                status = outcome.status,
                took = ?outcome.took,
                "a SIGTERMed replica exited"
            );
            if entry.final_stop {
                self.final_terms.push(outcome);
            } else {
                self.terms.push(outcome);
            }
        }
        exited
    }

    /// SIGKILLs a random live replica; returns its number and pid.
    pub(crate) fn kill_random(&mut self, rng: &mut impl Rng) -> Option<(usize, u32)> {
        if self.live.is_empty() {
            return None;
        }
        let mut replica = self.live.swap_remove(rng.random_range(0..self.live.len()));
        let pid = replica.pid();
        // Child::kill is SIGKILL to this child's pid.
        let _ = replica.child.kill();
        let _ = replica.child.wait();
        self.kills += 1;
        tracing::info!(replica = replica.number, pid, "SIGKILLed a replica");
        Some((replica.number, pid))
    }

    /// SIGTERMs a random live replica; its exit is recorded by [`check`](Self::check).
    pub(crate) fn term_random(&mut self, rng: &mut impl Rng) -> Option<(usize, u32)> {
        if self.live.is_empty() {
            return None;
        }
        let replica = self.live.swap_remove(rng.random_range(0..self.live.len()));
        Some(self.term(replica, false))
    }

    /// SIGTERMs every live replica (the end of the run).
    pub(crate) fn term_all(&mut self) {
        for replica in std::mem::take(&mut self.live) {
            self.term(replica, true);
        }
    }

    /// True when no replica runs any more.
    pub(crate) fn all_stopped(&self) -> bool {
        self.live.is_empty() && self.terminating.is_empty()
    }

    fn term(&mut self, replica: Replica, final_stop: bool) -> (usize, u32) {
        let pid = replica.pid();
        let number = replica.number;
        let sent = i32::try_from(pid)
            .map_err(|_| nix::errno::Errno::ESRCH)
            .and_then(|raw| kill(Pid::from_raw(raw), Signal::SIGTERM));
        if let Err(error) = sent {
            tracing::warn!(replica = number, pid, %error, "sending SIGTERM failed");
        }
        tracing::info!(replica = number, pid, "SIGTERMed a replica");
        self.terminating.push(Terminating {
            replica,
            since: Instant::now(),
            final_stop,
        });
        (number, pid)
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        // Even when a test panics: every child this harness started is killed by its pid.
        let live = self.live.iter_mut();
        let terminating = self.terminating.iter_mut().map(|t| &mut t.replica);
        for replica in live.chain(terminating) {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
    }
}

/// The last lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    const LINES: usize = 12;
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}
