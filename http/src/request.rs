//! A request as the protocol sees it, whatever transport carried it: the method, the target
//! split into path and query, and the request headers the protocol reads, gathered in one
//! pass. Everything here borrows from the transport's buffers; [`crate::protocol::prepare`]
//! turns it into an owned call before any body byte is read.

/// The methods the protocol routes on; any other token is [`Method::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// Any other method (answered 405 on stream paths).
    Other,
}

impl Method {
    /// The method named by `token` (methods are case-sensitive, RFC 9110 §9.1).
    #[must_use]
    pub fn parse(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// The request headers the protocol reads. Transports feed every header line to
/// [`RequestHeaders::add`]; the rest are ignored here (framing headers are the transport's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// `Content-Type`.
    ContentType,
    /// `Stream-Seq`.
    StreamSeq,
    /// `Stream-TTL`.
    StreamTtl,
    /// `Stream-Expires-At`.
    StreamExpiresAt,
    /// `Stream-Closed`.
    StreamClosed,
    /// `Stream-Forked-From`.
    StreamForkedFrom,
    /// `Stream-Fork-Offset`.
    StreamForkOffset,
    /// `Stream-Fork-Sub-Offset`.
    StreamForkSubOffset,
    /// `Producer-Id`.
    ProducerId,
    /// `Producer-Epoch`.
    ProducerEpoch,
    /// `Producer-Seq`.
    ProducerSeq,
    /// `If-None-Match`.
    IfNoneMatch,
    /// `Origin`.
    Origin,
    /// `Host`.
    Host,
    /// `X-Forwarded-Proto`.
    XForwardedProto,
    /// `Access-Control-Request-Method`.
    AccessControlRequestMethod,
    /// `Access-Control-Request-Headers`.
    AccessControlRequestHeaders,
    /// `Authorization` (subscription callbacks, acks, releases and claims).
    Authorization,
    /// `Accept-Encoding` (compressed reads).
    AcceptEncoding,
}

/// Number of [`Field`]s.
const FIELD_COUNT: usize = 19;

impl Field {
    /// Every field, in declaration order.
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::ContentType,
        Field::StreamSeq,
        Field::StreamTtl,
        Field::StreamExpiresAt,
        Field::StreamClosed,
        Field::StreamForkedFrom,
        Field::StreamForkOffset,
        Field::StreamForkSubOffset,
        Field::ProducerId,
        Field::ProducerEpoch,
        Field::ProducerSeq,
        Field::IfNoneMatch,
        Field::Origin,
        Field::Host,
        Field::XForwardedProto,
        Field::AccessControlRequestMethod,
        Field::AccessControlRequestHeaders,
        Field::Authorization,
        Field::AcceptEncoding,
    ];

    /// The header's name in lower case.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Field::ContentType => "content-type",
            Field::StreamSeq => "stream-seq",
            Field::StreamTtl => "stream-ttl",
            Field::StreamExpiresAt => "stream-expires-at",
            Field::StreamClosed => "stream-closed",
            Field::StreamForkedFrom => "stream-forked-from",
            Field::StreamForkOffset => "stream-fork-offset",
            Field::StreamForkSubOffset => "stream-fork-sub-offset",
            Field::ProducerId => "producer-id",
            Field::ProducerEpoch => "producer-epoch",
            Field::ProducerSeq => "producer-seq",
            Field::IfNoneMatch => "if-none-match",
            Field::Origin => "origin",
            Field::Host => "host",
            Field::XForwardedProto => "x-forwarded-proto",
            Field::AccessControlRequestMethod => "access-control-request-method",
            Field::AccessControlRequestHeaders => "access-control-request-headers",
            Field::Authorization => "authorization",
            Field::AcceptEncoding => "accept-encoding",
        }
    }

    /// The field a header name (any case) belongs to, if the protocol reads it.
    #[must_use]
    pub fn lookup(name: &[u8]) -> Option<Field> {
        // Most names a client sends are not ours: the length filters nearly all of them
        // before any byte is compared.
        let candidates: &[Field] = match name.len() {
            4 => &[Field::Host],
            6 => &[Field::Origin],
            10 => &[Field::StreamSeq, Field::StreamTtl],
            11 => &[Field::ProducerId],
            12 => &[Field::ContentType, Field::ProducerSeq],
            13 => &[Field::StreamClosed, Field::IfNoneMatch, Field::Authorization],
            14 => &[Field::ProducerEpoch],
            15 => &[Field::AcceptEncoding],
            17 => &[Field::StreamExpiresAt, Field::XForwardedProto],
            18 => &[Field::StreamForkedFrom, Field::StreamForkOffset],
            22 => &[Field::StreamForkSubOffset],
            29 => &[Field::AccessControlRequestMethod],
            30 => &[Field::AccessControlRequestHeaders],
            _ => return None,
        };
        candidates.iter().copied().find(|f| f.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// One field's first value, and whether it appeared more than once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot<'a> {
    /// The first value, as sent (the transport has trimmed surrounding whitespace).
    pub first: Option<&'a [u8]>,
    /// The header appeared on more than one line.
    pub repeated: bool,
    /// A later line's value differs from the first one (ignoring ASCII case).
    pub differs: bool,
}

/// The protocol's request headers, one slot per [`Field`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestHeaders<'a> {
    slots: [Slot<'a>; FIELD_COUNT],
}

impl<'a> RequestHeaders<'a> {
    /// Records one header line; names the protocol does not read are ignored.
    pub fn add(&mut self, name: &[u8], value: &'a [u8]) {
        if let Some(field) = Field::lookup(name) {
            self.add_field(field, value);
        }
    }

    /// Records one value of a known field.
    pub fn add_field(&mut self, field: Field, value: &'a [u8]) {
        let slot = &mut self.slots[field as usize];
        if let Some(first) = slot.first {
            slot.repeated = true;
            slot.differs |= !first.eq_ignore_ascii_case(value);
        } else {
            slot.first = Some(value);
        }
    }

    /// The first value of `field`.
    #[must_use]
    pub fn get(&self, field: Field) -> Option<&'a [u8]> {
        self.slots[field as usize].first
    }

    /// The slot of `field`.
    #[must_use]
    pub fn slot(&self, field: Field) -> Slot<'a> {
        self.slots[field as usize]
    }
}

/// A request head in protocol terms.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: Method,
    /// The path, still percent-encoded.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The authority the request was sent to: the target's own for an absolute-form target
    /// (RFC 9112 §3.2.2), `Host` otherwise.
    pub authority: Option<&'a str>,
    /// The protocol's headers.
    pub headers: RequestHeaders<'a>,
    /// The client's address, when the transport knows it (for rate limits).
    pub peer: Option<std::net::IpAddr>,
    /// Whether the request came over TLS.
    pub secure: bool,
}

impl RequestHead<'_> {
    /// The scheme the client used: `https` over TLS, or behind a proxy that says so
    /// (`X-Forwarded-Proto: https`); `http` otherwise.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        let forwarded = self.headers.get(Field::XForwardedProto).is_some_and(|v| v == b"https");
        if self.secure || forwarded { "https" } else { "http" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_found_by_its_name_in_any_case() {
        for field in Field::ALL {
            assert_eq!(Field::lookup(field.name().as_bytes()), Some(field));
            let upper = field.name().to_ascii_uppercase();
            assert_eq!(Field::lookup(upper.as_bytes()), Some(field));
        }
        for other in ["content-length", "connection", "stream-seq2", "", "x"] {
            assert_eq!(Field::lookup(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn repeats_are_noted_and_the_first_value_kept() {
        let mut h = RequestHeaders::default();
        h.add(b"Stream-TTL", b"1");
        h.add(b"stream-ttl", b"2");
        h.add(b"Content-Length", b"9");
        assert_eq!(h.get(Field::StreamTtl), Some(&b"1"[..]));
        assert!(h.slot(Field::StreamTtl).repeated);
        assert!(!h.slot(Field::ContentType).repeated);
    }
}
