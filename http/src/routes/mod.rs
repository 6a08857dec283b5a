//! One module per protocol operation. Each parses its request headers into an owned value,
//! calls the engine once and renders the result; the rules live in the engine.

pub mod append;
pub mod create;
pub mod delete;
pub mod head;
pub mod read;
pub mod subscriptions;
