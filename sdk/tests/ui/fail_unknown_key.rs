use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "source.connected", version = 2)]
struct SourceConnected {}

fn main() {}
