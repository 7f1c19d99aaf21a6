//! Node storage for tapes, kept per thread between validations so that a validation
//! allocates nothing for its tape once the thread has seen an event of the size.

use std::cell::Cell;

use super::TapeNode;

/// Storage larger than this is not kept (a large event's tape).
const KEEP_AT_MOST: usize = 4096;

thread_local! {
    static NODES: Cell<Vec<TapeNode>> = const { Cell::new(Vec::new()) };
}

/// This thread's storage (empty when another tape holds it, or none was given back).
pub(crate) fn take() -> Vec<TapeNode> {
    NODES.take()
}

/// Keeps `nodes`' storage for the thread's next tape.
pub(crate) fn give_back(mut nodes: Vec<TapeNode>) {
    if nodes.capacity() <= KEEP_AT_MOST {
        nodes.clear();
        NODES.set(nodes);
    }
}
