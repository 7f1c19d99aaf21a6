//! The Python that runs the interop scripts, with the real client packages installed.
//!
//! `HERALD_PYTHON` (set by `.ci/run` to the virtual environment it creates) is used as is.
//! Otherwise a virtual environment is created once in Herald's cache from `python3` and the
//! pinned packages are installed into it with pip. Without `python3` the interop tests are
//! skipped with a message, except in CI (`CI=true`), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages the scripts import, pinned.
pub const PACKAGES: [&str; 4] = [
    "cloudevents==2.2.0",
    "inngest==0.5.19",
    "standardwebhooks==1.1.0",
    "requests==2.34.2",
];

fn has_packages(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import cloudevents.core, inngest, standardwebhooks, requests",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Python to run the scripts with, or `None` (test skipped) when there is none locally.
pub fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("HERALD_PYTHON").filter(|v| !v.is_empty()) {
        let python = PathBuf::from(python);
        assert!(
            has_packages(&python),
            "HERALD_PYTHON={} lacks the interop packages; install them: {} -m pip install {}",
            python.display(),
            python.display(),
            PACKAGES.join(" ")
        );
        return Some(python);
    }
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !in_ci(),
            "CI=true but python3 is not installed: the interop tests must run in CI \
             (install python3 with venv and pip, or set HERALD_PYTHON)"
        );
        eprintln!(
            "SKIPPED: python3 is not installed, so the Python client interop tests do not run \
             (install python3, or set HERALD_PYTHON to a Python with {})",
            PACKAGES.join(" ")
        );
        return None;
    }
    let venv = herald_local_nats::cache_dir().join("gateway-interop-venv");
    let python = venv.join("bin").join("python");
    if has_packages(&python) {
        return Some(python);
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        created,
        "cannot create a virtual environment at {} (python3 -m venv); install python3-venv \
         or set HERALD_PYTHON",
        venv.display()
    );
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(PACKAGES)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed && has_packages(&python),
        "installing {} into {} failed; install them yourself or set HERALD_PYTHON",
        PACKAGES.join(" "),
        venv.display()
    );
    Some(python)
}

/// A script of `gateway/tests/python`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
        .join(name)
}
