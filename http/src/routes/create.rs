//! `PUT /v1/stream/{name}`: create a stream (§5.1), or fork one (§4.2).

use ds_engine::{ContentType, CreateRequest, Created, Expiry, ForkRequest};

use crate::body::Received;
use crate::error::ApiError;
use crate::name::BasePath;
use crate::request::RequestHead;
use crate::response::{Response, Status, Value};
use crate::state::AppState;
use crate::{headers, respond};

/// A parsed create request, waiting for its body.
#[derive(Debug)]
pub struct Create {
    name: String,
    content_type: ContentType,
    fork: Option<ForkRequest>,
    expiry: Expiry,
    closed: bool,
    location: Option<String>,
}

impl Create {
    /// Parses the headers of a create of `name`.
    ///
    /// # Errors
    /// 400 for malformed headers.
    pub fn parse(
        name: String,
        head: &RequestHead<'_>,
        base: &BasePath,
    ) -> Result<Create, ApiError> {
        let h = &head.headers;
        let content_type = headers::content_type(h)?;
        let fork = headers::fork(h, content_type.is_some(), base)?;
        let content_type =
            content_type.unwrap_or_else(|| ContentType::new(headers::DEFAULT_CONTENT_TYPE));
        let expiry = headers::expiry(h)?;
        let closed = headers::stream_closed(h)?;
        let location = location(head);
        Ok(Create { name, content_type, fork, expiry, closed, location })
    }

    /// Creates the stream: 201 when new, 200 when an identical one exists, 409 otherwise.
    ///
    /// # Errors
    /// 404 for a missing fork source, 409 for a different existing stream (or a deleted or
    /// mismatched fork source), 413, 400 for invalid JSON.
    pub async fn run(self, app: &AppState, body: Received) -> Result<Response, ApiError> {
        let req = CreateRequest {
            content_type: self.content_type,
            expiry: self.expiry,
            closed: self.closed,
            body: body.bytes.clone(),
        };
        let created = match self.fork {
            Some(fork) => app.engine.fork(&self.name, req, fork).await?,
            None => app.engine.create(&self.name, req).await?,
        };
        drop(body);
        let (status, info) = match created {
            Created::New(info) => (Status::CREATED, info),
            Created::Existing(info) => (Status::OK, info),
        };
        let mut resp = Response::empty(status);
        let h = &mut resp.headers;
        h.set("content-type", respond::content_type(&info));
        h.set(headers::STREAM_NEXT_OFFSET, headers::offset(info.tail));
        if info.closed {
            h.set(headers::STREAM_CLOSED, headers::TRUE);
        }
        if status == Status::CREATED
            && let Some(location) = self.location
        {
            h.set("location", Value::Text(location));
        }
        Ok(resp)
    }
}

/// The absolute URL of the new stream, from the request's authority (and
/// `X-Forwarded-Proto` behind a proxy). `None` if it would not be valid header text.
fn location(head: &RequestHead<'_>) -> Option<String> {
    let url = match head.authority.filter(|a| !a.is_empty()) {
        Some(host) => format!("{}://{host}{}", head.scheme(), head.path),
        None => head.path.to_owned(),
    };
    url.bytes().all(|b| b.is_ascii_graphic()).then_some(url)
}
