#![allow(missing_docs, clippy::unwrap_used)]
use herald::Event;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "bench.order_placed")]
struct OrderPlaced {
    order_id: uuid::Uuid,
    customer_id: uuid::Uuid,
    email: String,
    currency: String,
    total_cents: u64,
    items: Vec<LineItem>,
    note: Option<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct LineItem {
    sku: String,
    quantity: u32,
}

fn main() {
    let e = OrderPlaced {
        order_id: uuid::Uuid::now_v7(),
        customer_id: uuid::Uuid::now_v7(),
        email: "ada.lovelace@example.com".into(),
        currency: "EUR".into(),
        total_cents: 129_900,
        items: vec![
            LineItem {
                sku: "SKU-KEYBOARD-01".into(),
                quantity: 1,
            },
            LineItem {
                sku: "SKU-CABLE-USB-C".into(),
                quantity: 2,
            },
        ],
        note: Some("leave at the door".into()),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&OrderPlaced::schema()).unwrap()
    );
    let compiled = herald::schema::CompiledSchema::of::<OrderPlaced>().unwrap();
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec(&e).unwrap());
    }
    println!("to_vec(struct) {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_value(&e).unwrap());
    }
    println!("to_value {:?}", t.elapsed() / n);
    let v = serde_json::to_value(&e).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(compiled.validate(&v).is_ok());
    }
    println!("validate {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec(&v).unwrap());
    }
    println!("to_vec(value) {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(uuid::Uuid::now_v7().to_string());
    }
    println!("uuid {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(herald::headers::format_time(std::time::SystemTime::now()));
    }
    println!("time {:?}", t.elapsed() / n);
}
