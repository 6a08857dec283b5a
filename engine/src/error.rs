//! Engine errors. They name what went wrong in protocol terms, never an HTTP status:
//! `ds-http` maps each variant to a response in one place.

use std::fmt;

use crate::offset::Offset;

/// Everything an engine operation can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No stream by that name (or it expired).
    NotFound,
    /// `create` found a stream with a different configuration.
    ConfigMismatch,
    /// The stream is closed; nothing more can be appended. Carries the final tail.
    StreamClosed {
        /// The closed stream's final offset.
        tail: Offset,
    },
    /// The request's content type differs from the stream's.
    ContentTypeMismatch,
    /// An append with a body carried no content type.
    MissingContentType,
    /// `Stream-Seq` did not increase.
    SeqRegression,
    /// A producer's epoch is older than the one on record.
    StaleEpoch {
        /// The epoch on record.
        current: u64,
        /// Set when the stream is also closed: its final offset. A fenced-off producer learns
        /// both that it is fenced and that the stream has ended.
        closed_tail: Option<Offset>,
    },
    /// A producer raised its epoch without starting at sequence 0.
    EpochStartNotZero,
    /// A producer skipped sequence numbers.
    SeqGap {
        /// The next sequence number the stream expects.
        expected: u64,
        /// The sequence number the request carried.
        received: u64,
    },
    /// The body is not valid JSON for a JSON stream (message says why).
    InvalidJson(String),
    /// An append to a JSON stream carried an empty array.
    EmptyJsonArray,
    /// An append without `Stream-Closed` carried no data.
    EmptyBody,
    /// The append would take the stream past its size limit.
    StreamTooLarge {
        /// The per-stream limit in bytes.
        limit_bytes: u64,
    },
    /// The append would take the server past its memory limit.
    MemoryFull {
        /// The server-wide limit in bytes.
        limit_bytes: u64,
    },
    /// `Stream-Expires-At` names an instant that has already passed.
    ExpiryInPast,
    /// The read offset lies beyond the stream's tail.
    OffsetBeyondTail,
    /// The read offset names no position of this stream (inside a JSON message, say).
    OffsetUnknown,
    /// The offset was minted by an earlier incarnation of the name: a stream since deleted.
    OffsetGone,
    /// The engine cannot take writes now: still recovering, or stopped after a failed sync.
    Unavailable(&'static str),
    /// The storage failed or holds damaged data; the message is for the server log.
    Storage(String),
    /// The stream was deleted while forks still read its data (§4.2 soft delete): gone for
    /// every direct operation.
    Gone,
    /// A fork's source was deleted while other forks still read its data.
    SourceDeleted,
    /// `Stream-Fork-Sub-Offset` names a position past the data after the fork offset.
    SubOffsetOvershoot,
    /// This storage mode cannot do what was asked (the message says what).
    Unsupported(&'static str),
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("stream not found"),
            Error::ConfigMismatch => {
                f.write_str("stream already exists with a different configuration")
            }
            Error::StreamClosed { .. } => f.write_str("stream is closed"),
            Error::ContentTypeMismatch => {
                f.write_str("content type does not match the stream's content type")
            }
            Error::MissingContentType => f.write_str("an append with a body needs a Content-Type"),
            Error::SeqRegression => f.write_str("Stream-Seq must increase"),
            Error::StaleEpoch { current, .. } => {
                write!(f, "producer epoch is stale; current epoch is {current}")
            }
            Error::EpochStartNotZero => f.write_str("a new producer epoch must start at seq 0"),
            Error::SeqGap { expected, received } => {
                write!(f, "producer sequence gap: expected {expected}, received {received}")
            }
            Error::InvalidJson(why) => write!(f, "invalid JSON: {why}"),
            Error::EmptyJsonArray => f.write_str("an append cannot be an empty JSON array"),
            Error::EmptyBody => f.write_str("an append needs a body unless it closes the stream"),
            Error::StreamTooLarge { limit_bytes } => {
                write!(f, "stream would exceed its limit of {limit_bytes} bytes")
            }
            Error::MemoryFull { limit_bytes } => {
                write!(f, "server memory limit of {limit_bytes} bytes reached")
            }
            Error::ExpiryInPast => f.write_str("Stream-Expires-At is in the past"),
            Error::OffsetBeyondTail => f.write_str("offset is beyond the stream's tail"),
            Error::OffsetUnknown => f.write_str("offset does not name a position in this stream"),
            Error::OffsetGone => f.write_str("offset belongs to a deleted stream"),
            Error::Unavailable(why) => f.write_str(why),
            Error::Storage(why) => write!(f, "storage failure: {why}"),
            Error::Gone => f.write_str(
                "stream was deleted; its data is kept only for the streams forked from it",
            ),
            Error::SourceDeleted => {
                f.write_str("the fork source was deleted; it can no longer be forked")
            }
            Error::SubOffsetOvershoot => f.write_str(
                "Stream-Fork-Sub-Offset goes past the data that follows Stream-Fork-Offset",
            ),
            Error::Unsupported(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}
