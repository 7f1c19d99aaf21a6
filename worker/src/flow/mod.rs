//! Flow control evaluated by a function's own worker before its handler runs.

pub(crate) mod batch;
pub(crate) mod debounce;

pub use batch::{HEADER_BATCH, HEADER_BATCH_KEY};

pub use debounce::{HEADER_FIRST, HEADER_KEY, HEADER_SEQ, key_token, schedule_subject};
pub(crate) mod concurrency;
pub(crate) mod gcra;
pub(crate) mod limits;
pub(crate) mod metrics;
