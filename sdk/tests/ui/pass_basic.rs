use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "billing.invoice_paid")]
struct InvoicePaid {
    #[event(subject)]
    invoice: u64,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.signup.v2")]
#[serde(tag = "kind")]
enum Signup {
    Email { address: String },
    Sso { provider: String },
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "0-numbered.ok")]
struct Tuple(#[event(subject)] String, u32);

fn main() {
    assert_eq!(InvoicePaid::TYPE, "billing.invoice_paid");
    assert_eq!(Signup::TYPE, "user.signup.v2");
    assert_eq!(Tuple::TYPE, "0-numbered.ok");
    assert_eq!(Tuple("order-1".into(), 2).ce_subject().as_deref(), Some("order-1"));
    assert_eq!(InvoicePaid { invoice: 3 }.ce_subject().as_deref(), Some("3"));
}
