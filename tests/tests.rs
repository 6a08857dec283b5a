//! Black-box tests of the server over real loopback connections, one binary for all topics.
//! The official conformance suite runs separately (scripts/conformance.sh); these tests cover
//! what it does not: hostile input, limits, timeouts, caching policy, CORS lists, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

mod bad_input;
mod caching;
mod cli;
mod compression;
mod embedding;
mod fixtures;
mod framing;
mod http2;
mod live;
mod metrics;
mod protocol;
mod rate_limit;
mod subscriptions;
mod support;
