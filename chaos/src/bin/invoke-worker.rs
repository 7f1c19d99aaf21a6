//! `invoke-worker`: the caller of the invoke failure test. Runs `checkout` on
//! `invoke.order` events: it invokes `compute-price`, then, in a step, appends an audit
//! record `{order, price, pid}` to `<namespace>.audit.invoke`. With `--crash-after-call` the
//! process aborts right after its first call is sent, before its delivery is acked.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::invoke::{Order, Price, PriceRequest, audit_subject};
use herald_worker::{Ctx, Function, HandlerError, Worker, shutdown_signal};

/// The caller of the invoke failure test.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s).
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "invokechaos")]
    namespace: String,
    /// The function's ack_wait in seconds.
    #[arg(long, default_value_t = 2)]
    ack_wait: u64,
    /// Abort the process right after the first call is sent.
    #[arg(long)]
    crash_after_call: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    herald_chaos::replica_main(
        "invoke-worker",
        "info,async_nats=warn",
        Box::pin(run(Args::parse())),
    )
    .await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = audit_subject(client.namespace());
    let crash = args.crash_after_call;
    let function = Function::new("checkout")
        .on::<Order>()
        .ack_wait(Duration::from_secs(args.ack_wait))
        .handler(move |order: Order, ctx: Ctx| {
            let (jetstream, subject) = (jetstream.clone(), subject.clone());
            async move {
                let price = ctx
                    .invoke::<_, Price>(
                        "price",
                        "compute-price",
                        &PriceRequest {
                            quantity: order.quantity,
                        },
                        Duration::from_secs(60),
                    )
                    .await;
                if crash {
                    eprintln!("invoke-worker: the call is sent; crashing before the ack");
                    std::process::abort();
                }
                let price = price?;
                ctx.step("after", || async {
                    let body = serde_json::json!({
                        "order": order.id,
                        "price": price.cents,
                        "pid": std::process::id(),
                    });
                    jetstream
                        .publish(subject.clone(), body.to_string().into())
                        .await
                        .map_err(|e| HandlerError::retry(e.to_string()))?
                        .await
                        .map_err(|e| HandlerError::retry(e.to_string()))?;
                    Ok::<(), HandlerError>(())
                })
                .await?;
                Ok(())
            }
        });
    function.check().context("defining the function")?;
    Worker::builder(client)
        .function(function)
        .run_until(shutdown_signal())
        .await
        .context("the worker stopped")?;
    Ok(())
}
