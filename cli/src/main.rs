//! `herald`: the command line of Herald.
//!
//! ```text
//! herald bench publish            # Herald vs the raw async-nats client, side by side
//! herald provision                # create or check the namespace's streams and buckets
//! ```
//!
//! Every command reads `NATS_URL` (or `--server`) and `--namespace`.

mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
