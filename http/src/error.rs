//! [`ApiError`]: the one place where engine errors and request-parsing failures become HTTP
//! responses, each with a short `application/problem+json` body (RFC 9457).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ds_engine::Error;

use crate::headers;

/// An error response: a status, a short code and detail, and any protocol headers the
/// client needs to act on it without parsing the body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    extra: Vec<(axum::http::HeaderName, HeaderValue)>,
    close_connection: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), extra: Vec::new(), close_connection: false }
    }

    /// 400 for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }

    /// 413 for a body over the limit. The connection is closed, since the rest of the body
    /// may still be in flight.
    pub fn body_too_large(limit_bytes: usize) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds {limit_bytes} bytes"),
        );
        e.close_connection = true;
        e
    }

    /// 408 for a body that did not arrive in time.
    pub fn body_timeout() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "request body was not received in time",
        );
        e.close_connection = true;
        e
    }

    /// 501 for a protocol feature this server does not offer yet.
    pub fn not_implemented(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", detail)
    }

    /// 405.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed")
    }

    fn with(mut self, name: axum::http::HeaderName, value: HeaderValue) -> ApiError {
        self.extra.push((name, value));
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let detail = e.to_string();
        match e {
            Error::NotFound => ApiError::not_found(detail),
            Error::ConfigMismatch => ApiError::new(StatusCode::CONFLICT, "CONFLICT_EXISTS", detail),
            Error::StreamClosed { tail } => {
                ApiError::new(StatusCode::CONFLICT, "STREAM_CLOSED", detail)
                    .with(headers::STREAM_CLOSED, headers::TRUE)
                    .with(headers::STREAM_NEXT_OFFSET, headers::offset(tail))
            }
            Error::ContentTypeMismatch => {
                ApiError::new(StatusCode::CONFLICT, "CONTENT_TYPE_MISMATCH", detail)
            }
            Error::MissingContentType => ApiError::bad_request(detail),
            Error::SeqRegression => ApiError::new(StatusCode::CONFLICT, "SEQ_CONFLICT", detail),
            Error::StaleEpoch { current, closed_tail } => {
                let e = ApiError::new(StatusCode::FORBIDDEN, "STALE_EPOCH", detail)
                    .with(headers::PRODUCER_EPOCH, headers::number(current));
                match closed_tail {
                    Some(tail) => e
                        .with(headers::STREAM_CLOSED, headers::TRUE)
                        .with(headers::STREAM_NEXT_OFFSET, headers::offset(tail)),
                    None => e,
                }
            }
            Error::EpochStartNotZero => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_EPOCH_SEQ", detail)
            }
            Error::SeqGap { expected, received } => {
                ApiError::new(StatusCode::CONFLICT, "SEQUENCE_GAP", detail)
                    .with(headers::PRODUCER_EXPECTED_SEQ, headers::number(expected))
                    .with(headers::PRODUCER_RECEIVED_SEQ, headers::number(received))
            }
            Error::InvalidJson(_) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", detail),
            Error::EmptyJsonArray => {
                ApiError::new(StatusCode::BAD_REQUEST, "EMPTY_JSON_ARRAY", detail)
            }
            Error::EmptyBody => ApiError::new(StatusCode::BAD_REQUEST, "EMPTY_BODY", detail),
            Error::StreamTooLarge { .. } | Error::MemoryFull { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", detail)
            }
            Error::ExpiryInPast => ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", detail),
            Error::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", detail)
                    .with(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Error::Storage(why) => {
                // The detail may name files: log it, answer generically.
                tracing::error!(error = %why, "storage failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "STORAGE", "storage failure")
            }
            Error::OffsetBeyondTail | Error::OffsetUnknown => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_OFFSET", detail)
            }
            Error::Gone => ApiError::new(StatusCode::GONE, "STREAM_DELETED", detail),
            Error::SourceDeleted => {
                ApiError::new(StatusCode::CONFLICT, "FORK_SOURCE_DELETED", detail)
            }
            Error::SubOffsetOvershoot => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_SUB_OFFSET", detail)
            }
            Error::Unsupported(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", detail)
            }
            // The engine may grow variants; none of them may become a panic or leak detail.
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        for (name, value) in self.extra {
            h.insert(name, value);
        }
        if self.close_connection {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
