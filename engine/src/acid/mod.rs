//! The `acid` mode: streams in sharded redb databases, every mutation one transaction with
//! immediate durability, concurrent appends on a shard folded into one transaction.
//!
//! - [`store`]: the [`AcidStore`].
//! - [`tables`]: every table's key and value layout.
//! - [`layout`]: the manifest, shard routing and shard files.
//! - [`backend`]: redb's storage backend over [`crate::fs::FsFile`].

pub mod backend;
pub mod layout;
pub mod store;
pub mod tables;

pub use store::AcidStore;
