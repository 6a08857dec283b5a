//! HTTP-side settings. The binary fills these from TOML files and `DS_*` variables.

use std::time::Duration;

use crate::response::Value;

/// Which origins may read responses from a browser (`DS_HTTP__CORS_ORIGINS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// Only these exact origins, echoed back with `Vary: Origin`.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses `*` or a comma-separated list of origins. `None` if the list is empty or an
    /// origin is not a valid header value: a typo must not silently open CORS to everyone.
    #[must_use]
    pub fn parse(value: &str) -> Option<CorsOrigins> {
        if value.trim() == "*" {
            return Some(CorsOrigins::Any);
        }
        let list = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (s != "*" && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_owned()))
            .collect::<Option<Vec<String>>>()?;
        (!list.is_empty()).then_some(CorsOrigins::List(list))
    }
}

/// `Cache-Control` on reads that a shared cache may keep (`DS_HTTP__CACHE_CONTROL`): catch-up
/// chunks holding data and long-poll 200s. Everything else is always `no-store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Nothing is cached (the default: the server cannot know whether data is per-user).
    #[default]
    NoStore,
    /// `private, max-age=60, stale-while-revalidate=300`.
    Private,
    /// `public, max-age=60, stale-while-revalidate=300`, for deployments behind a CDN.
    Public,
}

impl CachePolicy {
    /// Parses `no-store`, `private` or `public`.
    #[must_use]
    pub fn parse(value: &str) -> Option<CachePolicy> {
        match value {
            "no-store" => Some(CachePolicy::NoStore),
            "private" => Some(CachePolicy::Private),
            "public" => Some(CachePolicy::Public),
            _ => None,
        }
    }

    /// The header value for a cacheable read of a stream that ends in `lifetime_secs` if
    /// nobody touches it again (`None`: it never expires). A cache never keeps a response,
    /// fresh or stale, past the stream's end (§5.6: derived from TTL/expiry), so both
    /// `max-age` and `stale-while-revalidate` shrink to the lifetime; a stream with less
    /// than a second left is not cached at all.
    #[must_use]
    pub fn cacheable_value(self, lifetime_secs: Option<u64>) -> Value {
        let scope = match self {
            CachePolicy::NoStore => return Value::Static("no-store"),
            CachePolicy::Private => "private",
            CachePolicy::Public => "public",
        };
        let life = lifetime_secs.unwrap_or(u64::MAX);
        if life == 0 {
            return Value::Static("no-store");
        }
        if life >= MAX_AGE_SECS + SWR_SECS {
            return Value::Static(match self {
                CachePolicy::Private => "private, max-age=60, stale-while-revalidate=300",
                _ => "public, max-age=60, stale-while-revalidate=300",
            });
        }
        let max_age = life.min(MAX_AGE_SECS);
        let swr = (life - max_age).min(SWR_SECS);
        Value::Text(format!("{scope}, max-age={max_age}, stale-while-revalidate={swr}"))
    }
}

/// `max-age` of a cacheable read.
const MAX_AGE_SECS: u64 = 60;
/// `stale-while-revalidate` of a cacheable read.
const SWR_SECS: u64 = 300;

/// Which HTTP front end serves the protocol (`DS_HTTP__FRONT_END`). Both serve the same
/// protocol mapping ([`crate::protocol`]); they differ only as transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FrontEnd {
    /// The hand-written HTTP/1.1 server on `httparse` (the default): pipelining with
    /// overlapped commits, strict framing, zero-copy file reads.
    #[default]
    Fast,
    /// axum on hyper: what embeds in an axum application.
    Axum,
}

impl FrontEnd {
    /// Parses `fast` or `axum`.
    #[must_use]
    pub fn parse(value: &str) -> Option<FrontEnd> {
        match value {
            "fast" => Some(FrontEnd::Fast),
            "axum" => Some(FrontEnd::Axum),
            _ => None,
        }
    }
}

/// Everything `ds-http` needs to know besides the engine.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// How long a long-poll waits for data before a 204.
    pub long_poll_timeout: Duration,
    /// SSE responses end after this long, so clients reconnect (and CDNs can collapse them);
    /// `None` keeps them open.
    pub sse_reconnect_interval: Option<Duration>,
    /// An idle SSE response gets a comment line this often, to keep proxies from timing out.
    pub sse_keepalive_interval: Duration,
    /// Allowed browser origins.
    pub cors_origins: CorsOrigins,
    /// Cache policy for cacheable reads.
    pub cache_control: CachePolicy,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once across all connections (received or being
    /// received, not yet handled); further bodies wait for room. At least `max_body_bytes`.
    pub max_pending_body_bytes: usize,
    /// A response that makes no write progress for this long (a client that stopped
    /// reading) has its connection closed.
    pub write_timeout: Duration,
    /// A request body must arrive within this long.
    pub body_read_timeout: Duration,
    /// Request headers must arrive within this long.
    pub header_read_timeout: Duration,
    /// Most connections served at once; further clients wait in the accept queue.
    pub max_connections: usize,
    /// The HTTP front end.
    pub front_end: FrontEnd,
    /// Requests per second per client address (§12.5); `None`: no limit.
    pub rate_limit: Option<crate::rate::RateLimit>,
    /// The server's public URL (`scheme://authority`, `DS_HTTP__PUBLIC_URL`): the base of
    /// the callback and JWKS URLs subscriptions hand out. `None`: the request's `Host`.
    pub public_url: Option<String>,
    /// Log every request at info level under target `access` (`DS_HTTP__ACCESS_LOG`).
    pub access_log: bool,
    /// Count Prometheus metrics and serve them at `GET /metrics` (`DS_METRICS__ENABLED`).
    pub metrics: bool,
    /// `/metrics` is served on a listener of its own (`DS_METRICS__LISTEN`), not here.
    pub metrics_elsewhere: bool,
    /// This is that listener: it answers `GET /metrics` and nothing else (404).
    pub metrics_only: bool,
    /// Compress catch-up and long-poll answers as `Accept-Encoding` allows
    /// (`DS_HTTP__COMPRESSION`; [`crate::compress`]).
    pub compression: bool,
    /// Where the protocol is mounted (`DS_HTTP__BASE_PATH`, `/v1/stream` by default).
    pub base_path: crate::name::BasePath,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            long_poll_timeout: Duration::from_secs(30),
            sse_reconnect_interval: Some(Duration::from_secs(60)),
            sse_keepalive_interval: Duration::from_secs(15),
            cors_origins: CorsOrigins::Any,
            cache_control: CachePolicy::NoStore,
            max_body_bytes: 10 * 1024 * 1024,
            max_pending_body_bytes: 256 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            front_end: FrontEnd::Fast,
            rate_limit: None,
            public_url: None,
            access_log: false,
            metrics: true,
            metrics_elsewhere: false,
            metrics_only: false,
            compression: true,
            base_path: crate::name::BasePath::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value) -> String {
        let mut out = Vec::new();
        v.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Regression: a stream expiring in 10 s was cached for 60 s plus 300 s stale.
    #[test]
    fn caching_never_outlives_the_stream() {
        let public = CachePolicy::Public;
        let full = "public, max-age=60, stale-while-revalidate=300";
        assert_eq!(text(public.cacheable_value(None)), full);
        assert_eq!(text(public.cacheable_value(Some(360))), full);
        assert_eq!(
            text(public.cacheable_value(Some(100))),
            "public, max-age=60, stale-while-revalidate=40"
        );
        assert_eq!(
            text(CachePolicy::Private.cacheable_value(Some(10))),
            "private, max-age=10, stale-while-revalidate=0"
        );
        assert_eq!(text(public.cacheable_value(Some(0))), "no-store");
        assert_eq!(text(CachePolicy::NoStore.cacheable_value(Some(10))), "no-store");
    }
}
