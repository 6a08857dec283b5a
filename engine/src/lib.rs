//! # ds-engine
//!
//! The storage engine behind ds-server. It knows streams, offsets, producers, TTLs and
//! notifications, and nothing about HTTP: `ds-http` parses requests into the types here, calls
//! one [`Engine`] method, and renders the result.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ds_engine::{AppendRequest, ContentType, CreateRequest, Engine, EngineConfig, Expiry, ReadFrom};
//! let engine = Engine::open(EngineConfig::default()).unwrap();
//! let text = ContentType::new("text/plain");
//! engine.create("greetings", CreateRequest {
//!     content_type: text.clone(), expiry: Expiry::Never, closed: false, body: "hello".into(),
//! }).await.unwrap();
//! engine.append("greetings", AppendRequest {
//!     content_type: Some(text), body: ", world".into(), stream_seq: None, producer: None,
//!     close: false,
//! }).await.unwrap();
//! let chunk = engine.read("greetings", ReadFrom::Start).await.unwrap();
//! assert_eq!(chunk.into_body().concat(), b"hello, world");
//! # });
//! ```
//!
//! # Layout
//! - [`engine`]: the façade; one method per protocol operation.
//! - [`store`]: the backend trait and the request/result types that cross it.
//! - [`memory`]: the memory backend, also the reference model for the persistent ones.
//! - [`rules`]: closure, content-type, `Stream-Seq` and producer rules, as pure functions.
//! - [`producer`]: the idempotent-producer epoch/sequence table.
//! - [`offset`]: the opaque offset token; the only code that knows its encoding.
//! - [`json`]: JSON-mode validation, flattening and array wrapping.
//! - [`notify`]: per-stream tail signal for live readers.
//! - [`ttl`]: the expiry index and sweeper.
//! - [`clock`], [`config`], [`error`], [`payload`].

pub mod acid;
pub mod chunk;
pub mod clock;
mod commit_queue;
pub mod config;
pub mod engine;
pub mod error;
pub mod fs;
pub mod inspect;
pub mod json;
mod lifecycle;
pub mod log;
pub mod memory;
pub mod meta;
pub mod notify;
pub mod offset;
pub mod payload;
pub mod pg;
pub mod producer;
pub mod rules;
pub mod stats;
pub mod store;
mod stream_core;
pub mod subscription;
pub mod ttl;

pub use clock::{Clock, ManualClock, SystemClock, UnixMs};
pub use config::{EngineConfig, Limits, StorageMode};
pub use engine::{Engine, OpenError};
pub use error::{Error, Result};
pub use notify::{Tail, TailWatch};
pub use offset::{Lineage, Offset, ReadFrom, TagCheck, tag_of};
pub use producer::{MAX_PRODUCER_NUMBER, ProducerClaim};
pub use store::{
    AppendKind, AppendRequest, AppendTicket, Appended, ContentType, CreateRequest, Created, Expiry,
    ForkLink, ForkRequest, ProducerRequest, ReadChunk, StreamInfo,
};
