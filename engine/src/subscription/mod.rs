//! Subscriptions (§6–7): durable cursors over sets of streams that wake workers. Being built
//! in steps (issue 9); so far:
//!
//! - [`config`]: a subscription's configuration as a client sends it, checked and
//!   normalized; subscription ids.
//! - [`glob`]: patterns over stream paths, and the path rules subscriptions share.
//! - [`keys`]: the webhook signing key (Ed25519, JWKS, `Webhook-Signature`) and the HS256
//!   tokens of callbacks and claims.
//! - [`record`]: a subscription as one self-checking record, for the store that will keep
//!   subscriptions across restarts.
//! - [`registry`]: every subscription by id, with the indexes that keep the append hook
//!   cheap (pattern prefixes, explicit links).
//! - [`state`]: one subscription's links, cursors, wakes, fencing, leases and retries, as
//!   pure transitions.
//! - [`webhook_url`]: which webhook URLs and resolved addresses are allowed (SSRF rules).

pub mod config;
pub mod glob;
pub mod keys;
pub mod record;
pub mod registry;
pub mod state;
pub mod webhook_url;
