//! The append-log storage of the `file-fast` and `file-durable` modes.
//!
//! - [`store`]: the [`FileStore`]: group commit, reads, deletes, expiry.
//! - [`recovery`]: opening a data directory after a clean stop or a crash.
//! - [`frame`]: the byte format of log files, with a total decoder.
//! - [`journal`]: the `file-durable` journal: one sync per commit round.
//! - [`meta`]: metadata and checkpoint side files.
//! - [`scan`]: reading a log forward, stopping at damage.
//! - [`handles`]: the bounded pool of open files.
//! - [`checks`]: properties on arbitrary bytes, shared by the fuzz targets and tests.

pub mod checks;
pub mod frame;
pub mod handles;
pub mod journal;
pub mod meta;
pub mod recovery;
pub mod scan;
pub mod store;

pub use store::{Durability, FileStore};
