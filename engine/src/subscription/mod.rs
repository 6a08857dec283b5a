//! Subscriptions (§6–7): durable cursors over sets of streams that wake workers.
//!
//! - [`cluster`]: the `postgres` mode's side: the leader's view of the streams, and the
//!   requests other nodes hand to the leader.
//! - [`service`]: the [`Subscriptions`] service: requests, the append hook, the scheduler
//!   of leases, deliveries and retries, and persistence.
//! - [`control`]: the control database and key file of the persistent modes.
//! - [`view`]: the JSON clients and receivers see.
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

pub(crate) mod cluster;
pub mod config;
pub mod control;
pub mod glob;
pub mod keys;
pub mod record;
pub mod registry;
pub mod service;
pub mod state;
pub mod view;
pub mod webhook_url;

pub use service::{Settings, SubError, Subscriptions, WebhookRequest, WebhookSender};
