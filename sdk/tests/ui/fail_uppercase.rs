use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "Source.Connected")]
struct SourceConnected {}

fn main() {}
