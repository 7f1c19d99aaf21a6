//! Functions served over HTTP ("push functions").
//!
//! A push function is declared in the KV bucket `ns-push` ([`PushFunctions`], `herald push
//! add`) and run by any `herald serve --push` replica ([`run`]) as an ordinary Herald
//! function whose handler POSTs the event to the function's URL: CloudEvents binary mode,
//! signed per Standard Webhooks (`webhook-id` stable across retries). Retries, backoff,
//! timeouts, dead letters, redrive, replay and run records therefore apply unchanged.
//!
//! | answer | outcome |
//! | --- | --- |
//! | 2xx | ok |
//! | 429 or 503 with `Retry-After` | retry after that delay (at most [`PushOptions::max_retry_after`]) |
//! | 408, 429, other 5xx, connection or TLS error | retry with backoff; the last attempt dead-letters `handler_error` |
//! | no answer within the timeout | `timeout` |
//! | `herald-no-retry: true`, other 4xx, 3xx (redirects are not followed) | `terminal_error`, dead-lettered at once |

pub mod call;
mod dispatch;
pub mod sign;
mod spec;

pub use dispatch::{PushOptions, function, run};
pub use spec::{PushError, PushFunction, PushFunctions, check};
