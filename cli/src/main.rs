//! `herald`: the command line of Herald.
//!
//! ```text
//! herald bench publish            # Herald vs the raw async-nats client, side by side
//! herald provision                # create or check the namespace's streams and buckets
//! herald --server URL dlq list    # connection options before or after the command
//! ```
//!
//! Every command reads `NATS_URL` (or `--server`) and `--namespace`; the exit codes are
//! defined in `exit.rs`, and only there.

mod commands;
mod denied;
mod exit;

use std::process::ExitCode;

use clap::Parser;

use exit::Exit;

/// mimalloc: the worker, gateway and benchmarks allocate per message, and glibc's allocator
/// spent about a quarter of the worker's CPU in `herald bench consume` (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are not errors.
            let code = if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = error.print();
            return code.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let (code, line) = exit::describe(&error);
            eprintln!("error: {line}");
            code.into()
        }
    }
}

/// `herald … | head` ends quietly when the reader goes away, as other command-line tools do,
/// instead of panicking on the next line printed.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
