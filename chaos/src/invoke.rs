//! The events of the invoke failure test (`tests/invoke_kill.rs`, binary `invoke-worker`).

use herald::{Event, Namespace};
use serde::{Deserialize, Serialize};

/// An order the caller prices by invoking `compute-price`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "invoke.order")]
pub struct Order {
    /// The order id.
    pub id: String,
    /// Its quantity.
    pub quantity: u64,
}

/// What the caller sends `compute-price` (its own type: the callee sees only calls).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "invoke.price_request")]
pub struct PriceRequest {
    /// The quantity to price.
    pub quantity: u64,
}

/// What `compute-price` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// The price in cents.
    pub cents: u64,
}

/// Where the caller audits the step after the call.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.invoke", namespace.as_str())
}
