//! `herald bench validate`: the CPU cost of Herald's schema validation per event, in
//! process, next to plain serde_json doing the same serialisation or decoding.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use herald::Event;
use herald::schema::CompiledSchema;

use crate::publish::{OrderPlaced, sample_event};

#[derive(Debug, Args)]
/// `herald bench validate`: its options.
pub struct ValidateBench {
    /// Events per measurement.
    #[arg(long, default_value_t = 200_000)]
    count: u32,
    /// Measurements per mode; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

impl ValidateBench {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let event = sample_event();
        let schema = CompiledSchema::of::<OrderPlaced>()?;
        let bytes = serde_json::to_vec(&event)?;
        println!(
            "validation benchmark: a {}-byte {} event, {} events x {} rounds, in process",
            bytes.len(),
            OrderPlaced::TYPE,
            self.count,
            self.rounds
        );
        let measure = |work: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let mut samples = Vec::with_capacity(self.rounds);
            for _ in 0..self.rounds {
                let started = Instant::now();
                for _ in 0..self.count {
                    work()?;
                }
                samples.push(started.elapsed().as_nanos() as f64 / f64::from(self.count));
            }
            samples.sort_by(f64::total_cmp);
            Ok(samples[samples.len() / 2])
        };
        // Producer side: what Herald does before sending, against plain serialisation.
        let serialize = measure(&|| {
            std::hint::black_box(serde_json::to_vec(std::hint::black_box(&event))?);
            Ok(())
        })?;
        // What `Client::publish` does: serialise once, validate the bytes it sends.
        let publish_side = measure(&|| {
            let mut bytes = Vec::new();
            schema.serialize_validated(std::hint::black_box(&event), &mut bytes)?;
            std::hint::black_box(bytes);
            Ok(())
        })?;
        // Validating JSON text read from bytes (`CompiledSchema::validate_json`).
        let validate_text = measure(&|| {
            anyhow::ensure!(
                schema.validate_json(std::hint::black_box(&bytes)).is_ok(),
                "the sample event is invalid"
            );
            Ok(())
        })?;
        // Through a `serde_json::Value`, as publishing did before `validate_json`.
        let through_value = measure(&|| {
            let value = serde_json::to_value(std::hint::black_box(&event))?;
            anyhow::ensure!(
                schema.validate(&value).is_ok(),
                "the sample event is invalid"
            );
            std::hint::black_box(serde_json::to_vec(&value)?);
            Ok(())
        })?;
        // Consumer side: what a worker does before the handler, against plain decoding.
        let decode = measure(&|| {
            std::hint::black_box(serde_json::from_slice::<OrderPlaced>(
                std::hint::black_box(&bytes),
            )?);
            Ok(())
        })?;
        // What a worker does: validate the text and decode the type from what validation
        // read (`CompiledSchema::decode_validated`).
        let consume_side = measure(&|| {
            let decoded = schema.decode_validated::<OrderPlaced>(std::hint::black_box(&bytes));
            std::hint::black_box(decoded.map_err(|error| anyhow::anyhow!("{error}"))?);
            Ok(())
        })?;
        // The same in two reads of the text: validate it, then decode it with serde_json.
        let twice = measure(&|| {
            anyhow::ensure!(
                schema.validate_json(std::hint::black_box(&bytes)).is_ok(),
                "the sample event is invalid"
            );
            std::hint::black_box(serde_json::from_slice::<OrderPlaced>(&bytes)?);
            Ok(())
        })?;
        // Through a `serde_json::Value`, as workers did before `validate_json`.
        let consume_through_value = measure(&|| {
            let value: serde_json::Value = serde_json::from_slice(std::hint::black_box(&bytes))?;
            anyhow::ensure!(
                schema.validate(&value).is_ok(),
                "the sample event is invalid"
            );
            std::hint::black_box(serde_json::from_value::<OrderPlaced>(value)?);
            Ok(())
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        let validate_only = measure(&|| {
            anyhow::ensure!(
                schema.validate(std::hint::black_box(&value)).is_ok(),
                "the sample event is invalid"
            );
            Ok(())
        })?;
        println!("{:<58} {:>10}", "step", "ns/event");
        println!(
            "{:<58} {:>10.0}",
            "serde_json::to_vec (raw producer)", serialize
        );
        println!(
            "{:<58} {:>10.0}",
            "herald producer: serialize_validated (the bytes sent)", publish_side
        );
        println!(
            "{:<58} {:>10.0}",
            "  through a Value: to_value + validate + to_vec", through_value
        );
        println!(
            "{:<58} {:>10.0}",
            "serde_json::from_slice into the type (raw consumer)", decode
        );
        println!(
            "{:<58} {:>10.0}",
            "herald worker: decode_validated (one read of the text)", consume_side
        );
        println!(
            "{:<58} {:>10.0}",
            "  validate_json, then serde_json::from_slice", twice
        );
        println!(
            "{:<58} {:>10.0}",
            "  through a Value: from_slice + validate + from_value", consume_through_value
        );
        println!(
            "{:<58} {:>10.0}",
            "validate alone (compiled schema, parsed value)", validate_only
        );
        println!(
            "{:<58} {:>10.0}",
            "validate_json (JSON text, read in place)", validate_text
        );
        println!(
            "validation adds {:.0} ns per published event and {:.0} ns per consumed event",
            publish_side - serialize,
            consume_side - decode
        );
        Ok(ExitCode::SUCCESS)
    }
}
