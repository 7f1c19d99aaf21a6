//! Writes the JSON Schemas of the example events to `schemas/<type>/<version>.json`.
//!
//! Run with `cargo run -p example-events --bin export-schemas`. A type whose newest committed
//! schema equals what it generates is left alone; a changed type gets a new version file.

use herald::schema::ExportOutcome;

fn main() -> anyhow::Result<()> {
    let dir = example_events::schema_dir();
    for outcome in dir.export(&example_events::schemas())? {
        match outcome {
            ExportOutcome::Unchanged { path } => println!("unchanged {}", path.display()),
            ExportOutcome::Written { path, version } => {
                println!("wrote     {} (version {version})", path.display());
            }
        }
    }
    Ok(())
}
