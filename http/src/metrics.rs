//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format
//! (`prometheus-client`). No label carries anything a client chooses (a stream name, a
//! producer id, a path): operations, status classes, outcomes and reader kinds are closed
//! sets, so the number of series is fixed.
//!
//! Counted where they happen: requests and their latency by the front ends when a
//! response head is ready ([`Observed`]), append outcomes and bytes by the append route,
//! read bytes by the read routes, live readers by guards the long-poll and SSE answers
//! hold. Read at each scrape: the stream count, memory use, readiness, the process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use ds_engine::{Engine, stats};

use crate::query::Live;
use crate::request::{Method, RequestHead};
use crate::response::Status;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a request asked for (the `operation` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are snake_case")]
pub enum Operation {
    /// `PUT` on a stream.
    create,
    /// `POST` on a stream.
    append,
    /// A catch-up `GET`.
    read,
    /// `GET` with `live=long-poll`.
    long_poll,
    /// `GET` with `live=sse`.
    sse,
    /// `HEAD` on a stream.
    head,
    /// `DELETE` on a stream.
    delete,
    /// `OPTIONS` (CORS preflight).
    options,
    /// The subscriptions' control API.
    subscriptions,
    /// `/healthz`, `/readyz`.
    probe,
    /// `/metrics`.
    metrics,
    /// Anything else (unknown paths and methods, unreadable requests).
    other,
}

impl Operation {
    /// Every operation, in declaration order (`op as usize` indexes this).
    const ALL: [Operation; 12] = [
        Operation::create,
        Operation::append,
        Operation::read,
        Operation::long_poll,
        Operation::sse,
        Operation::head,
        Operation::delete,
        Operation::options,
        Operation::subscriptions,
        Operation::probe,
        Operation::metrics,
        Operation::other,
    ];

    /// The operation `head` asks for, the protocol mounted at `base`.
    #[must_use]
    pub fn of(head: &RequestHead<'_>, base: &crate::name::BasePath) -> Operation {
        let path = head.path;
        if path == "/metrics" {
            return Operation::metrics;
        }
        if path == "/healthz" || path == "/readyz" {
            return Operation::probe;
        }
        if crate::routes::subscriptions::is_control_path(base, path) {
            return Operation::subscriptions;
        }
        if base.strip(path).is_none() {
            return Operation::other;
        }
        match head.method {
            Method::Put => Operation::create,
            Method::Post => Operation::append,
            Method::Head => Operation::head,
            Method::Delete => Operation::delete,
            Method::Options => Operation::options,
            Method::Other => Operation::other,
            Method::Get => {
                let live =
                    head.query.unwrap_or("").split('&').find_map(|p| p.strip_prefix("live="));
                match live.and_then(Live::named) {
                    Some(Live::Sse) => Operation::sse,
                    Some(Live::LongPoll) => Operation::long_poll,
                    Some(Live::No) | None => Operation::read,
                }
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: Operation,
    status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
}

/// A response status's class (the `status` label): `2xx` and so on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct StatusClass(u16);

impl EncodeLabelValue for StatusClass {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}xx", self.0)
    }
}

/// How an append ended (the `outcome` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are snake_case")]
pub enum Outcome {
    /// Data appended, or the stream closed by the request.
    appended,
    /// A producer's retry (or a repeated close): nothing changed.
    duplicate,
    /// Refused (4xx or 5xx): nothing changed.
    refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// A webhook delivery's outcome (`done`, `accepted`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
}

/// A live reader's kind (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are snake_case")]
pub enum LiveKind {
    /// Waiting in a long-poll.
    long_poll,
    /// Holding an SSE response.
    sse,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LiveLabels {
    kind: LiveKind,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Every series of the two request families, made at start so that counting a
    /// request takes no lock: by operation, then status class 1xx to 5xx.
    requests: Vec<[Counter; 5]>,
    duration: Vec<Latency>,
    /// By [`Outcome`], in declaration order.
    appends: [Counter; 3],
    appended_bytes: Counter,
    read_bytes: Counter,
    /// By [`LiveKind`], in declaration order.
    live: [Gauge; 2],
}

/// A latency histogram (nanoseconds, shown in seconds) counted with atomics: observing
/// takes no lock (the library's `Histogram` takes a write lock per observation, which every
/// request would contend on). Buckets from 50 µs, doubling: the last bound is 6.6 s.
#[derive(Clone, Debug)]
pub(crate) struct Latency(Arc<stats::Histogram>);

impl Default for Latency {
    fn default() -> Latency {
        Latency(Arc::new(stats::Histogram::new(50_000)))
    }
}

impl Latency {
    pub(crate) fn observe(&self, elapsed: std::time::Duration) {
        self.0.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_histogram(encoder, &self.0, 1e-9)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Encodes an engine histogram, its values multiplied by `scale` (1e-9: nanoseconds as
/// seconds).
fn encode_histogram(
    mut encoder: MetricEncoder<'_>,
    histogram: &stats::Histogram,
    scale: f64,
) -> Result<(), std::fmt::Error> {
    #[allow(clippy::cast_precision_loss, reason = "as f64, as Prometheus has them")]
    let scaled = |v: u64| v as f64 * scale;
    let (buckets, sum) = histogram.snapshot();
    let buckets: Vec<(f64, u64)> =
        buckets.into_iter().map(|(bound, n)| (bound.map_or(f64::MAX, scaled), n)).collect();
    // The count is the buckets' sum, so that the two always agree in one exposition.
    let count = buckets.iter().map(|(_, n)| n).sum();
    encoder.encode_histogram::<NoLabelSet>(scaled(sum), count, &buckets, None)
}

impl Metrics {
    /// The metrics of a server over `engine`.
    #[must_use]
    pub fn new(engine: Arc<Engine>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ds_http_requests",
            "HTTP requests answered, by operation and status class",
            requests.clone(),
        );
        let durations = Family::<OperationLabels, Latency>::default();
        registry.register_with_unit(
            "ds_http_request_duration",
            "Time from a request's head read to its response head ready, by operation",
            Unit::Seconds,
            durations.clone(),
        );
        let series = |operation| {
            let class = |c| {
                requests.get_or_create(&RequestLabels { operation, status: StatusClass(c) }).clone()
            };
            [class(1), class(2), class(3), class(4), class(5)]
        };
        let duration = Operation::ALL
            .iter()
            .map(|&operation| durations.get_or_create(&OperationLabels { operation }).clone())
            .collect();
        let requests = Operation::ALL.iter().map(|&op| series(op)).collect();
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register("ds_appends", "Appends by outcome", outcomes.clone());
        let outcome = |outcome| outcomes.get_or_create(&OutcomeLabels { outcome }).clone();
        let appends =
            [outcome(Outcome::appended), outcome(Outcome::duplicate), outcome(Outcome::refused)];
        let appended_bytes = Counter::default();
        registry.register_with_unit(
            "ds_appended",
            "Request body bytes of appends that appended",
            Unit::Bytes,
            appended_bytes.clone(),
        );
        let read_bytes = Counter::default();
        registry.register_with_unit(
            "ds_read",
            "Stream bytes sent to readers (catch-up, long-poll and SSE data)",
            Unit::Bytes,
            read_bytes.clone(),
        );
        let live = Family::<LiveLabels, Gauge>::default();
        registry.register(
            "ds_live_readers",
            "Long-poll and SSE readers connected now",
            live.clone(),
        );
        let kind = |kind| live.get_or_create(&LiveLabels { kind }).clone();
        let live = [kind(LiveKind::long_poll), kind(LiveKind::sse)];
        registry.register_collector(Box::new(EngineCollector { engine }));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics { registry, requests, duration, appends, appended_bytes, read_bytes, live }
    }

    /// The exposition (OpenMetrics text).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }

    /// Counts an answered request.
    pub fn answered(&self, operation: Operation, status: Status, started: Instant) {
        let class = usize::from(status.code() / 100).clamp(1, 5) - 1;
        self.requests[operation as usize][class].inc();
        self.duration[operation as usize].observe(started.elapsed());
    }

    /// Counts an append's outcome (and its bytes, when it appended).
    pub fn append(&self, outcome: Outcome, bytes: u64) {
        self.appends[outcome as usize].inc();
        if outcome == Outcome::appended {
            self.appended_bytes.inc_by(bytes);
        }
    }

    /// Counts bytes sent to a reader.
    pub fn read(&self, bytes: u64) {
        self.read_bytes.inc_by(bytes);
    }

    /// A live reader, counted while the guard lives.
    #[must_use]
    pub fn live(&self, kind: LiveKind) -> LiveGuard {
        let gauge = self.live[kind as usize].clone();
        gauge.inc();
        LiveGuard(gauge)
    }
}

/// Counts one live reader until dropped.
#[derive(Debug)]
pub struct LiveGuard(Gauge);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The storage mode (the commit histograms' label: fixed for a node's life).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

/// The engine's state at each scrape.
#[derive(Debug)]
struct EngineCollector {
    engine: Arc<Engine>,
}

/// Encodes one metric without labels, read at this scrape.
fn one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(m)
}

/// [`one`] for an integer gauge.
fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    one(encoder, name, help, unit, &ConstGauge::new(value))
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let e = &self.engine;
        let ready = i64::from(e.is_ready());
        gauge(
            &mut encoder,
            "ds_ready",
            "1 once recovery is done and the store serves",
            None,
            ready,
        )?;
        let streams = e.list("").map_or(0, |l| i64::try_from(l.len()).unwrap_or(i64::MAX));
        gauge(&mut encoder, "ds_streams", "Streams this node knows", None, streams)?;
        let poisoned = i64::from(e.is_poisoned());
        gauge(
            &mut encoder,
            "ds_store_poisoned",
            "1 once a failed write or sync stopped every write until a restart",
            None,
            poisoned,
        )?;
        let stats = e.stats();
        #[allow(clippy::cast_precision_loss, reason = "seconds as f64")]
        let opened = stats.open_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        one(
            &mut encoder,
            "ds_open_duration",
            "Time the store took to open at start (recovery; reaching the database); 0 until open",
            Some(&Unit::Seconds),
            &ConstGauge::new(opened),
        )?;
        let mode = ModeLabels { mode: e.config().mode.as_str() };
        let mut m = encoder.encode_descriptor(
            "ds_commit_appends",
            "Appends per commit round",
            None,
            MetricType::Histogram,
        )?;
        encode_histogram(m.encode_family(&mode)?, &stats.commits.appends, 1.0)?;
        let mut m = encoder.encode_descriptor(
            "ds_commit_duration",
            "Commit round time, from its first write until durable (sync, redb or PostgreSQL commit included)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        encode_histogram(m.encode_family(&mode)?, &stats.commits.nanos, 1e-9)?;
        let hooks = &stats.webhooks;
        let mut m = encoder.encode_descriptor(
            "ds_webhook_deliveries",
            "Webhook deliveries by outcome: done (2xx, done), accepted (other 2xx), failed",
            None,
            MetricType::Counter,
        )?;
        for (outcome, counter) in
            [("done", &hooks.done), ("accepted", &hooks.accepted), ("failed", &hooks.failed)]
        {
            let n = ConstCounter::new(counter.load(Ordering::Relaxed));
            n.encode(m.encode_family(&DeliveryLabels { outcome })?)?;
        }
        let m = encoder.encode_descriptor(
            "ds_webhook_delivery_duration",
            "Webhook delivery time, connecting to the end of the answer (or the timeout)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        encode_histogram(m, &hooks.nanos, 1e-9)?;
        if let Some(used) = e.memory_used_bytes() {
            let limit = e.config().limits.max_memory_bytes;
            let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            gauge(
                &mut encoder,
                "ds_memory_used",
                "Bytes charged to the memory limit (memory mode)",
                Some(&Unit::Bytes),
                as_i64(used),
            )?;
            gauge(
                &mut encoder,
                "ds_memory_limit",
                "The memory limit (memory mode)",
                Some(&Unit::Bytes),
                as_i64(limit),
            )?;
        }
        Ok(())
    }
}

/// The process's CPU time, memory and descriptors, from `/proc/self` (Linux; nothing
/// elsewhere), named as Prometheus' client libraries name them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = process::sample() else { return Ok(()) };
        one(
            &mut encoder,
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            &ConstCounter::new(p.cpu_seconds),
        )?;
        let rss = i64::try_from(p.resident_bytes).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            rss,
        )?;
        let fds = i64::try_from(p.open_fds).unwrap_or(i64::MAX);
        gauge(&mut encoder, "process_open_fds", "Open file descriptors", None, fds)?;
        Ok(())
    }
}

mod process {
    /// One reading of the process's resources.
    pub(super) struct Sample {
        pub(super) cpu_seconds: f64,
        pub(super) resident_bytes: u64,
        pub(super) open_fds: u64,
    }

    /// Reads `/proc/self/stat` (utime, stime: fields 14 and 15, in clock ticks),
    /// `/proc/self/statm` (resident pages) and `/proc/self/fd`.
    pub(super) fn sample() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: fields count from after its `)`.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        // Field 14 is index 11 after the name and state (fields 3.. start at index 0).
        let (utime, stime) = (ticks(11)?, ticks(12)?);
        let per_sec = rustix::param::clock_ticks_per_second();
        #[allow(clippy::cast_precision_loss, reason = "CPU ticks stay far below 2^52")]
        let cpu_seconds = (utime + stime) as f64 / per_sec.max(1) as f64;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let resident_bytes = pages * rustix::param::page_size() as u64;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Sample { cpu_seconds, resident_bytes, open_fds })
    }
}

/// What the front ends keep of a request until its response head: its operation and when
/// it started (for the metrics), and its access-log line (when that is on).
#[derive(Debug)]
pub(crate) struct Observed {
    operation: Operation,
    started: Instant,
    access: Option<crate::front::Access>,
}

impl Observed {
    /// The record of `head`.
    pub(crate) fn of(app: &crate::state::AppState, head: &RequestHead<'_>) -> Observed {
        Observed {
            operation: Operation::of(head, &app.config.base_path),
            started: Instant::now(),
            access: crate::front::Access::of(app, head),
        }
    }

    /// The record of a request whose head could not be read as one.
    pub(crate) fn unreadable(
        app: &crate::state::AppState,
        peer: Option<std::net::IpAddr>,
    ) -> Observed {
        Observed {
            operation: Operation::other,
            started: Instant::now(),
            access: crate::front::Access::unreadable(app, peer),
        }
    }

    /// The response head is ready: count it, and write its access-log line.
    pub(crate) fn answered(self, app: &crate::state::AppState, status: Status) {
        if let Some(metrics) = &app.metrics {
            metrics.answered(self.operation, status, self.started);
        }
        if let Some(access) = self.access {
            access.log(status, self.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestHeaders;

    fn head<'a>(method: Method, path: &'a str, query: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            query,
            authority: None,
            headers: RequestHeaders::default(),
            peer: None,
            secure: false,
        }
    }

    #[test]
    fn operations_come_from_method_path_and_live_mode_only() {
        let s = "/v1/stream/a";
        for (h, op) in [
            (head(Method::Put, s, None), Operation::create),
            (head(Method::Post, s, None), Operation::append),
            (head(Method::Get, s, Some("offset=-1")), Operation::read),
            (head(Method::Get, s, Some("offset=now&live=long-poll")), Operation::long_poll),
            (head(Method::Get, s, Some("live=sse&offset=-1")), Operation::sse),
            (head(Method::Head, s, None), Operation::head),
            (head(Method::Delete, s, None), Operation::delete),
            (head(Method::Options, s, None), Operation::options),
            (head(Method::Get, "/readyz", None), Operation::probe),
            (head(Method::Get, "/metrics", None), Operation::metrics),
            (head(Method::Get, "/elsewhere", None), Operation::other),
            (head(Method::Other, s, None), Operation::other),
        ] {
            assert_eq!(
                Operation::of(&h, &crate::name::BasePath::default()),
                op,
                "{:?} {} {:?}",
                h.method,
                h.path,
                h.query
            );
        }
    }

    #[test]
    fn the_process_sample_reads_this_process() {
        let p = process::sample().expect("Linux /proc");
        assert!(p.cpu_seconds >= 0.0 && p.resident_bytes > 1 << 20 && p.open_fds >= 3);
    }
}
