use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "order.placed")]
struct OrderPlaced {
    #[event(subject)]
    order_id: u64,
    #[event(subject)]
    user_id: u64,
}

fn main() {}
