//! [`ApiError`]: the one place where engine errors and request-parsing failures become HTTP
//! responses, each with a short `application/problem+json` body (RFC 9457).

use bytes::Bytes;
use ds_engine::Error;

use crate::headers;
use crate::response::{Body, Response, Status, Value};

/// An error response: a status, a short code and detail, and any protocol headers the
/// client needs to act on it without parsing the body.
#[derive(Debug)]
pub struct ApiError {
    status: Status,
    code: &'static str,
    detail: String,
    extra: Vec<(&'static str, Value)>,
    close_connection: bool,
}

impl ApiError {
    pub(crate) fn new(status: Status, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), extra: Vec::new(), close_connection: false }
    }

    /// 400 for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(Status::BAD_REQUEST, "BAD_REQUEST", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(Status::NOT_FOUND, "NOT_FOUND", detail)
    }

    /// 413 for a body over the limit. The connection is closed, since the rest of the body
    /// may still be in flight.
    pub fn body_too_large(limit_bytes: usize) -> ApiError {
        let mut e = ApiError::new(
            Status::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds {limit_bytes} bytes"),
        );
        e.close_connection = true;
        e
    }

    /// 408 for a body that did not arrive in time.
    pub fn body_timeout() -> ApiError {
        let mut e = ApiError::new(
            Status::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "request body was not received in time",
        );
        e.close_connection = true;
        e
    }

    /// 501 for a protocol feature this server does not offer yet.
    pub fn not_implemented(detail: impl Into<String>) -> ApiError {
        ApiError::new(Status::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", detail)
    }

    /// 400 for a request whose framing cannot be trusted (RFC 9112): the connection closes,
    /// since where this request ends, and so where the next one starts, is unknown.
    pub fn bad_framing(detail: impl Into<String>) -> ApiError {
        ApiError::bad_request(detail).closing()
    }

    /// 431 for a request head over the limit.
    pub fn head_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            Status::HEADERS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("request head exceeds {limit_bytes} bytes or too many header lines"),
        )
        .closing()
    }

    /// 414 for a request target over the limit.
    pub fn target_too_long(limit_bytes: usize) -> ApiError {
        ApiError::new(
            Status::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("request target exceeds {limit_bytes} bytes"),
        )
        .closing()
    }

    /// 505 for an HTTP version other than 1.0 and 1.1.
    pub fn version_not_supported() -> ApiError {
        ApiError::new(
            Status::VERSION_NOT_SUPPORTED,
            "VERSION_NOT_SUPPORTED",
            "this server speaks HTTP/1.0 and HTTP/1.1",
        )
        .closing()
    }

    /// 417 for an `Expect` other than `100-continue`.
    pub fn expectation_failed() -> ApiError {
        ApiError::new(
            Status::EXPECTATION_FAILED,
            "EXPECTATION_FAILED",
            "the only expectation this server meets is 100-continue",
        )
        .closing()
    }

    /// 429 for a client over its rate limit, with `Retry-After` in whole seconds (at least 1).
    pub fn too_many_requests(retry_after: std::time::Duration) -> ApiError {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError::new(
            Status::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "request rate limit exceeded for this client address",
        )
        .with("retry-after", Value::Number(secs.max(1)))
    }

    /// 405.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(Status::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed")
    }

    /// This error closes the connection after its answer: the request's framing or the rest
    /// of its body cannot be trusted.
    #[must_use]
    pub fn closing(mut self) -> ApiError {
        self.close_connection = true;
        self
    }

    pub(crate) fn with(mut self, name: &'static str, value: Value) -> ApiError {
        self.extra.push((name, value));
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let detail = e.to_string();
        match e {
            Error::NotFound => ApiError::not_found(detail),
            Error::ConfigMismatch => ApiError::new(Status::CONFLICT, "CONFLICT_EXISTS", detail),
            Error::StreamClosed { tail } => {
                ApiError::new(Status::CONFLICT, "STREAM_CLOSED", detail)
                    .with(headers::STREAM_CLOSED, headers::TRUE)
                    .with(headers::STREAM_NEXT_OFFSET, headers::offset(tail))
            }
            Error::ContentTypeMismatch => {
                ApiError::new(Status::CONFLICT, "CONTENT_TYPE_MISMATCH", detail)
            }
            Error::MissingContentType => ApiError::bad_request(detail),
            Error::SeqRegression => ApiError::new(Status::CONFLICT, "SEQ_CONFLICT", detail),
            Error::StaleEpoch { current, closed_tail } => {
                let e = ApiError::new(Status::FORBIDDEN, "STALE_EPOCH", detail)
                    .with(headers::PRODUCER_EPOCH, headers::number(current));
                match closed_tail {
                    Some(tail) => e
                        .with(headers::STREAM_CLOSED, headers::TRUE)
                        .with(headers::STREAM_NEXT_OFFSET, headers::offset(tail)),
                    None => e,
                }
            }
            Error::EpochStartNotZero => {
                ApiError::new(Status::BAD_REQUEST, "INVALID_EPOCH_SEQ", detail)
            }
            Error::SeqGap { expected, received } => {
                ApiError::new(Status::CONFLICT, "SEQUENCE_GAP", detail)
                    .with(headers::PRODUCER_EXPECTED_SEQ, headers::number(expected))
                    .with(headers::PRODUCER_RECEIVED_SEQ, headers::number(received))
            }
            Error::InvalidJson(_) => ApiError::new(Status::BAD_REQUEST, "INVALID_JSON", detail),
            Error::EmptyJsonArray => ApiError::new(Status::BAD_REQUEST, "EMPTY_JSON_ARRAY", detail),
            Error::EmptyBody => ApiError::new(Status::BAD_REQUEST, "EMPTY_BODY", detail),
            Error::StreamTooLarge { .. } | Error::MemoryFull { .. } => {
                ApiError::new(Status::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", detail)
            }
            Error::ExpiryInPast => ApiError::new(Status::BAD_REQUEST, "BAD_REQUEST", detail),
            Error::Unavailable(_) => {
                ApiError::new(Status::SERVICE_UNAVAILABLE, "UNAVAILABLE", detail)
                    .with("retry-after", Value::Static("1"))
            }
            Error::Storage(why) => {
                // The detail may name files: log it, answer generically.
                tracing::error!(error = %why, "storage failure");
                ApiError::new(Status::INTERNAL_SERVER_ERROR, "STORAGE", "storage failure")
            }
            Error::OffsetBeyondTail | Error::OffsetUnknown => {
                ApiError::new(Status::BAD_REQUEST, "INVALID_OFFSET", detail)
            }
            Error::Gone => ApiError::new(Status::GONE, "STREAM_DELETED", detail),
            Error::OffsetGone => ApiError::new(Status::GONE, "OFFSET_GONE", detail),
            Error::SourceDeleted => ApiError::new(Status::CONFLICT, "FORK_SOURCE_DELETED", detail),
            Error::SubOffsetOvershoot => {
                ApiError::new(Status::BAD_REQUEST, "INVALID_SUB_OFFSET", detail)
            }
            Error::Unsupported(_) => {
                ApiError::new(Status::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", detail)
            }
            // The engine may grow variants; none of them may become a panic or leak detail.
            _ => ApiError::new(Status::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error"),
        }
    }
}

impl ApiError {
    /// The problem+json response.
    #[must_use]
    pub fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.reason(),
            "status": self.status.code(),
            "code": self.code,
            "detail": self.detail,
        });
        let mut resp = Response::empty(self.status);
        resp.body = Body::Full(Bytes::from(body.to_string()));
        resp.headers.set("content-type", Value::Static("application/problem+json"));
        for (name, value) in self.extra {
            resp.headers.set(name, value);
        }
        resp.close = self.close_connection;
        resp
    }
}
