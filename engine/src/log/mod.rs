//! The append-log storage of the `file-fast` and `file-durable` modes.
//!
//! - [`frame`]: the byte format of log files, with a total decoder.
//! - [`meta`]: metadata and checkpoint side files.
//! - [`scan`]: reading a log forward, stopping at damage.

pub mod frame;
pub mod meta;
pub mod scan;
