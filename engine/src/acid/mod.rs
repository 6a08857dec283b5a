//! The `acid` mode: streams in sharded redb databases, every mutation one transaction with
//! immediate durability, concurrent appends on a shard folded into one transaction.
//!
//! - [`store`]: the [`AcidStore`].
//! - [`tables`]: every table's key and value layout.
//! - [`layout`]: the manifest, shard routing and shard files.
//! - [`backend`]: redb's storage backends over [`crate::fs::FsFile`]: the server's, and a
//!   copy-on-write one for read-only inspection.
//! - [`inspect`]: read-only views for `engine-inspect`.

pub mod backend;
pub mod inspect;
pub mod layout;
pub mod store;
pub mod tables;

pub use store::AcidStore;
