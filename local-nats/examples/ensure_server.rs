//! Finds or installs the nats-server that Herald's tests and examples use, and prints it.
//!
//! `cargo run -p herald-local-nats --example ensure_server`

fn main() -> Result<(), herald_local_nats::Error> {
    let binary = herald_local_nats::find_or_install()?;
    println!(
        "nats-server {} at {} ({:?})",
        binary.version,
        binary.path.display(),
        binary.origin
    );
    Ok(())
}
