//! Configuration: built-in defaults, then TOML files, then `DS_*` environment variables,
//! each layer overriding the one before. `DS_SECTION__KEY` sets `key` in `[section]`, so
//! `DS_SERVER__PORT=8080` is `[server] port = 8080`. Unknown keys are errors, so a typo
//! never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ds_engine::{EngineConfig, Limits, StorageMode};
use ds_http::{CachePolicy, CorsOrigins, FrontEnd, HttpConfig, RateLimit};
use serde::{Deserialize, Serialize};

/// Most client addresses the rate limiter remembers at once (about 4 MiB of buckets).
const RATE_LIMIT_CLIENTS: usize = 65_536;

/// The file read from the working directory when it exists.
pub const LOCAL_CONFIG_FILE: &str = "ds-server.toml";

/// Every setting, in the layout of the TOML file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerSection,
    /// `[http]`
    pub http: HttpSection,
    /// `[storage]`
    pub storage: StorageSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[subscriptions]`
    pub subscriptions: SubscriptionsSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
}

/// `[metrics]`: Prometheus metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Count metrics and serve them at `GET /metrics` (OpenMetrics text).
    pub enabled: bool,
    /// An address (`127.0.0.1:9464`) to serve `/metrics` on instead of the main port;
    /// empty: the main port.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> MetricsSection {
        MetricsSection { enabled: true, listen: String::new() }
    }
}

/// `[subscriptions]`: webhooks and pull-wake (§6–7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsSection {
    /// Accept webhook URLs to loopback (`localhost`, `*.localhost`, `127.0.0.x`, `[::1]`,
    /// over http or https) and deliver to them (development and tests; never production).
    pub allow_local_webhooks: bool,
    /// When set, a claim needs `Authorization: Bearer` with an HS256 JWT signed by this
    /// secret; empty: claims are open.
    pub claim_secret: String,
    /// A PEM (PKCS#8) Ed25519 private key that signs webhooks; empty: the server makes one
    /// (and stores it in the data directory in the persistent modes).
    pub signing_key_file: String,
    /// Connect-and-exchange timeout of one webhook delivery, in milliseconds.
    pub webhook_timeout_ms: u64,
}

impl Default for SubscriptionsSection {
    fn default() -> SubscriptionsSection {
        SubscriptionsSection {
            allow_local_webhooks: false,
            claim_secret: String::new(),
            signing_key_file: String::new(),
            webhook_timeout_ms: 10_000,
        }
    }
}

/// `[server]`: listening and timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to bind.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Long-poll wait before a 204, in seconds.
    pub long_poll_timeout_secs: u64,
    /// Long-poll wait in milliseconds; overrides `long_poll_timeout_secs` when set.
    pub long_poll_timeout_ms: Option<u64>,
    /// SSE responses end after this many seconds; 0 keeps them open.
    pub sse_reconnect_interval_secs: u64,
    /// Idle SSE responses get a keep-alive comment this often.
    pub sse_keepalive_secs: u64,
    /// Request headers must arrive within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A request body must arrive within this many seconds.
    pub body_read_timeout_secs: u64,
    /// A response that makes no write progress for this many seconds is dropped.
    pub write_timeout_secs: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Threads of the async runtime; 0 means one per CPU.
    pub worker_threads: usize,
    /// HTTPS: the certificate chain (PEM, leaf first); with `tls_key_file`. Empty: plain
    /// HTTP. Reloaded on SIGHUP.
    pub tls_cert_file: String,
    /// HTTPS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: String,
}

/// `[http]`: browser and cache behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `*` or a comma-separated list of origins.
    pub cors_origins: String,
    /// `no-store`, `private` or `public`: `Cache-Control` of cacheable reads.
    pub cache_control: String,
    /// `fast` (the hand-written HTTP/1.1 server) or `axum` (axum on hyper).
    pub front_end: String,
    /// The server's public URL (`https://streams.example.com`), the base of the callback
    /// and JWKS URLs subscriptions hand out; empty: taken from each request's `Host`.
    pub public_url: String,
    /// Log every request (target `access`, level info): method, target, status, time to
    /// the response head, client address.
    pub access_log: bool,
    /// Compress catch-up and long-poll answers of 1 KiB or more with zstd, br or gzip as
    /// the request's `Accept-Encoding` allows.
    pub compression: bool,
    /// Where the protocol is mounted: streams under `{base_path}/`, subscriptions under
    /// `{base_path}/__ds/`.
    pub base_path: String,
}

/// `[storage]`: the backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `memory`, `file-fast`, `file-durable`, `acid` or `postgres`.
    pub mode: String,
    /// Root of the persistent backends.
    pub data_dir: PathBuf,
    /// Most log files held open at once (file modes).
    pub max_open_files: usize,
    /// Shards of the acid mode: a power of two, fixed once the data directory is created.
    pub acid_shard_count: u32,
    /// Size of the `file-durable` journal, which makes a commit round over many streams
    /// durable with one sync; 0 turns it off (each round syncs the logs it wrote).
    pub journal_bytes: u64,
    /// The `postgres` mode's database: a libpq connection string
    /// (`host=a,b dbname=streams target_session_attrs=read-write`) or URL.
    pub postgres_url: String,
    /// Connections to PostgreSQL a node opens at most (`postgres` mode).
    pub postgres_pool_size: usize,
}

/// `[limits]`: sizes, in bytes, and the request rate per client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// All streams together (memory mode).
    pub max_memory_bytes: u64,
    /// One stream.
    pub max_stream_bytes: u64,
    /// One request body.
    pub max_body_bytes: u64,
    /// Request bodies held at once across all connections.
    pub max_pending_body_bytes: u64,
    /// One read response (a larger JSON message is still returned whole).
    pub read_chunk_bytes: u64,
    /// Requests per second per client address; 0 turns rate limiting off.
    pub rate_limit_per_sec: u64,
    /// Requests a client may send at once after idling; 0 means twice the rate.
    pub rate_limit_burst: u64,
}

impl Default for ServerSection {
    fn default() -> ServerSection {
        ServerSection {
            host: "0.0.0.0".into(),
            port: 4437,
            long_poll_timeout_secs: 30,
            long_poll_timeout_ms: None,
            sse_reconnect_interval_secs: 60,
            sse_keepalive_secs: 15,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            write_timeout_secs: 30,
            max_connections: 10_000,
            worker_threads: 0,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl Default for HttpSection {
    fn default() -> HttpSection {
        HttpSection {
            cors_origins: "*".into(),
            cache_control: "no-store".into(),
            front_end: "fast".into(),
            public_url: String::new(),
            access_log: false,
            compression: true,
            base_path: ds_http::name::DEFAULT_BASE_PATH.into(),
        }
    }
}

impl Default for StorageSection {
    fn default() -> StorageSection {
        StorageSection {
            mode: "memory".into(),
            data_dir: PathBuf::from("./data/streams"),
            max_open_files: 1024,
            acid_shard_count: 4,
            journal_bytes: ds_engine::log::journal::DEFAULT_JOURNAL_BYTES,
            postgres_url: String::new(),
            postgres_pool_size: 16,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        let limits = Limits::default();
        LimitsSection {
            max_memory_bytes: limits.max_memory_bytes,
            max_stream_bytes: limits.max_stream_bytes,
            max_body_bytes: limits.max_stream_bytes,
            max_pending_body_bytes: 256 * 1024 * 1024,
            read_chunk_bytes: 1024 * 1024,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
        }
    }
}

/// Why the configuration could not be loaded. The message names the file or variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Loads the configuration: defaults, `./ds-server.toml` if present, each of `files` in
/// order (`--config FILE`), then every `DS_*__*` variable in `env`.
///
/// # Errors
/// An unreadable or malformed file, an unknown key, a value of the wrong type, or an
/// invalid setting (an unknown storage mode, a zero chunk size...).
pub fn load(
    files: &[PathBuf],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut files = files.to_vec();
    if Path::new(LOCAL_CONFIG_FILE).is_file() {
        files.insert(0, PathBuf::from(LOCAL_CONFIG_FILE));
    }
    let defaults = toml::Value::try_from(Config::default())
        .map_err(|e| err(format!("internal: defaults do not serialise: {e}")))?;
    let mut merged = defaults.clone();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| err(format!("cannot read {}: {e}", file.display())))?;
        let layer: toml::Table =
            toml::from_str(&text).map_err(|e| err(format!("{}: {e}", file.display())))?;
        // Each file alone over the defaults, so that an unknown key or a wrong type is
        // reported with the file that has it.
        let mut alone = defaults.clone();
        merge(&mut alone, toml::Value::Table(layer.clone()));
        alone
            .try_into::<Config>()
            .map_err(|e: toml::de::Error| err(format!("{}: {e}", file.display())))?;
        merge(&mut merged, toml::Value::Table(layer));
    }
    for (key, value) in env {
        apply_env(&mut merged, &defaults, &key, &value)?;
    }
    let config: Config =
        merged.try_into().map_err(|e: toml::de::Error| err(format!("configuration: {e}")))?;
    config.validate()?;
    Ok(config)
}

/// What a secret is printed as.
const REDACTED: &str = "<redacted>";

/// `url` (a libpq URL or `key=value` connection string) with its password replaced.
fn redact_postgres_url(url: &str) -> String {
    let mut out = url.to_owned();
    // postgres://user:password@host/...
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
            && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
        {
            out.replace_range(colon + 1..at, REDACTED);
        }
    }
    // password=... as a key=value pair or a URL query parameter.
    let mut from = 0;
    while let Some(found) = out[from..].to_ascii_lowercase().find("password").map(|i| from + i) {
        let key_end = found + "password".len();
        let after_key = out[key_end..].trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            from = key_end;
            continue;
        };
        let value_start = out.len() - value.trim_start().len();
        let bytes = out.as_bytes();
        let value_end = if bytes.get(value_start) == Some(&b'\'') {
            // A quoted value: up to the closing quote (backslash escapes one character).
            let mut i = value_start + 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            (i + 1).min(bytes.len())
        } else {
            out[value_start..].find([' ', '&', '\t']).map_or(out.len(), |i| value_start + i)
        };
        out.replace_range(value_start..value_end, REDACTED);
        from = value_start + REDACTED.len();
    }
    out
}

fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(base), toml::Value::Table(layer)) => {
            for (k, v) in layer {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

/// Sets one `DS_SECTION__KEY` variable, typed after the default at that path.
fn apply_env(
    merged: &mut toml::Value,
    defaults: &toml::Value,
    key: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let Some(rest) = key.strip_prefix("DS_") else { return Ok(()) };
    let Some((section, field)) = rest.split_once("__") else { return Ok(()) };
    let (section, field) = (section.to_ascii_lowercase(), field.to_ascii_lowercase());
    let known_section = defaults.get(&section).is_some();
    let slot = merged
        .get_mut(&section)
        .and_then(toml::Value::as_table_mut)
        .filter(|_| known_section)
        .ok_or_else(|| err(format!("{key}: unknown section `{section}`")))?;
    let typed = match defaults.get(&section).and_then(|s| s.get(&field)) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            value.trim().parse().map_err(|_| err(format!("{key}: `{value}` is not an integer")))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            value.trim().parse().map_err(|_| err(format!("{key}: `{value}` is not true/false")))?,
        ),
        Some(_) => toml::Value::String(value.to_owned()),
        // Optional settings have no default to copy the type from; they are all integers.
        None => match value.trim().parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => toml::Value::String(value.to_owned()),
        },
    };
    slot.insert(field, typed);
    Ok(())
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.storage_mode()?;
        self.cache_policy()?;
        self.cors_origins()?;
        self.front_end()?;
        self.base_path()?;
        let s = &self.server;
        let day = 86_400;
        for (name, secs) in [
            ("server.long_poll_timeout_secs", s.long_poll_timeout_secs),
            ("server.sse_reconnect_interval_secs", s.sse_reconnect_interval_secs),
            ("server.sse_keepalive_secs", s.sse_keepalive_secs),
            ("server.header_read_timeout_secs", s.header_read_timeout_secs),
            ("server.body_read_timeout_secs", s.body_read_timeout_secs),
            ("server.write_timeout_secs", s.write_timeout_secs),
            ("server.long_poll_timeout_ms / 1000", s.long_poll_timeout_ms.unwrap_or(0) / 1000),
        ] {
            if secs > day {
                return Err(err(format!("{name} must be at most {day} (one day)")));
            }
        }
        if !(1..=1_000_000).contains(&self.storage.max_open_files) {
            return Err(err("storage.max_open_files must be from 1 to 1000000"));
        }
        let journal = self.storage.journal_bytes;
        if journal != 0 && !(1 << 20..=1 << 32).contains(&journal) {
            return Err(err("storage.journal_bytes must be 0 (off) or from 1 MiB to 4 GiB"));
        }
        let shards = self.storage.acid_shard_count;
        if !shards.is_power_of_two() || shards > 256 {
            return Err(err("storage.acid_shard_count must be a power of two from 1 to 256"));
        }
        if self.storage_mode()? == StorageMode::Postgres && self.storage.postgres_url.is_empty() {
            return Err(err("storage.postgres_url must be set in the postgres mode"));
        }
        if !(2..=1000).contains(&self.storage.postgres_pool_size) {
            return Err(err("storage.postgres_pool_size must be from 2 to 1000"));
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(err("server.max_connections must be from 1 to 1000000"));
        }
        if s.tls_cert_file.is_empty() != s.tls_key_file.is_empty() {
            return Err(err(
                "server.tls_cert_file and server.tls_key_file go together: set both for HTTPS, or neither",
            ));
        }
        if s.worker_threads > 1024 {
            return Err(err("server.worker_threads must be from 0 (one per CPU) to 1024"));
        }
        let l = &self.limits;
        let gib = 1u64 << 30;
        if l.read_chunk_bytes == 0 || l.read_chunk_bytes > gib {
            return Err(err("limits.read_chunk_bytes must be from 1 to 1 GiB"));
        }
        if l.max_body_bytes == 0 || l.max_body_bytes > gib {
            return Err(err("limits.max_body_bytes must be from 1 to 1 GiB"));
        }
        if l.max_pending_body_bytes < l.max_body_bytes || l.max_pending_body_bytes > 1 << 40 {
            return Err(err(
                "limits.max_pending_body_bytes must be at least limits.max_body_bytes, at most 1 TiB",
            ));
        }
        if l.rate_limit_per_sec > 1_000_000 {
            return Err(err("limits.rate_limit_per_sec must be from 0 (off) to 1000000"));
        }
        if l.rate_limit_burst > 10_000_000 {
            return Err(err("limits.rate_limit_burst must be from 0 (twice the rate) to 10000000"));
        }
        let url = &self.http.public_url;
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty()
            && (!scheme_ok
                || !url.bytes().all(|b| b.is_ascii_graphic())
                || url.contains(['?', '#']))
        {
            return Err(err(format!(
                "http.public_url `{url}` must be an http:// or https:// URL without query or fragment"
            )));
        }
        self.metrics_address()?;
        if !(100..=600_000).contains(&self.subscriptions.webhook_timeout_ms) {
            return Err(err("subscriptions.webhook_timeout_ms must be from 100 to 600000"));
        }
        Ok(())
    }

    /// The effective settings as TOML, in the layout of the file, with secrets redacted: the
    /// claim secret, and the password in the PostgreSQL connection string.
    #[must_use]
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.subscriptions.claim_secret.is_empty() {
            shown.subscriptions.claim_secret = REDACTED.into();
        }
        shown.storage.postgres_url = redact_postgres_url(&shown.storage.postgres_url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print the settings: {e}\n"))
    }

    /// The subscription service's settings.
    #[must_use]
    pub fn subscriptions(&self) -> ds_engine::subscription::Settings {
        let s = &self.subscriptions;
        let public = self.http.public_url.trim_end_matches('/');
        ds_engine::subscription::Settings {
            allow_local_webhooks: s.allow_local_webhooks,
            claim_secret: (!s.claim_secret.is_empty()).then(|| s.claim_secret.clone()),
            signing_key_file: (!s.signing_key_file.is_empty())
                .then(|| PathBuf::from(&s.signing_key_file)),
            webhook_timeout: Duration::from_millis(s.webhook_timeout_ms),
            public_base: (!public.is_empty()).then(|| {
                let base = self.base_path().unwrap_or_default();
                format!("{public}{}", base.root())
            }),
        }
    }

    fn cors_origins(&self) -> Result<CorsOrigins, ConfigError> {
        CorsOrigins::parse(&self.http.cors_origins).ok_or_else(|| {
            err(format!(
                "http.cors_origins `{}` must be `*` or a comma-separated list of origins",
                self.http.cors_origins
            ))
        })
    }

    fn front_end(&self) -> Result<FrontEnd, ConfigError> {
        FrontEnd::parse(&self.http.front_end).ok_or_else(|| {
            err(format!("http.front_end `{}` is not one of fast, axum", self.http.front_end))
        })
    }

    fn storage_mode(&self) -> Result<StorageMode, ConfigError> {
        StorageMode::parse(&self.storage.mode).ok_or_else(|| {
            err(format!(
                "storage.mode `{}` is not one of memory, file-fast, file-durable, acid, postgres",
                self.storage.mode
            ))
        })
    }

    fn base_path(&self) -> Result<ds_http::name::BasePath, ConfigError> {
        ds_http::name::BasePath::new(&self.http.base_path)
            .map_err(|e| err(format!("http.base_path: {e}")))
    }

    fn cache_policy(&self) -> Result<CachePolicy, ConfigError> {
        CachePolicy::parse(&self.http.cache_control).ok_or_else(|| {
            err(format!(
                "http.cache_control `{}` is not one of no-store, private, public",
                self.http.cache_control
            ))
        })
    }

    /// The engine's part of the configuration.
    #[must_use]
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            mode: self.storage_mode().unwrap_or_default(),
            data_dir: self.storage.data_dir.clone(),
            limits: Limits {
                max_stream_bytes: self.limits.max_stream_bytes,
                max_memory_bytes: self.limits.max_memory_bytes,
            },
            read_chunk_bytes: usize::try_from(self.limits.read_chunk_bytes).unwrap_or(usize::MAX),
            max_open_files: self.storage.max_open_files,
            acid_shard_count: self.storage.acid_shard_count,
            journal_bytes: self.storage.journal_bytes,
            postgres_url: self.storage.postgres_url.clone(),
            postgres_pool_size: self.storage.postgres_pool_size,
        }
    }

    /// The rate limit, if one is set: the burst defaults to twice the rate, and at most
    /// `RATE_LIMIT_CLIENTS` client addresses are remembered.
    fn rate_limit(&self) -> Option<RateLimit> {
        let l = &self.limits;
        (l.rate_limit_per_sec > 0).then(|| {
            let burst =
                if l.rate_limit_burst == 0 { 2 * l.rate_limit_per_sec } else { l.rate_limit_burst };
            #[allow(clippy::cast_precision_loss, reason = "both are at most 10^7")]
            RateLimit {
                per_sec: l.rate_limit_per_sec as f64,
                burst: burst as f64,
                max_clients: RATE_LIMIT_CLIENTS,
            }
        })
    }

    /// The HTTP layer's part of the configuration.
    #[must_use]
    pub fn http(&self) -> HttpConfig {
        let s = &self.server;
        let long_poll = s
            .long_poll_timeout_ms
            .map_or(Duration::from_secs(s.long_poll_timeout_secs), Duration::from_millis);
        HttpConfig {
            long_poll_timeout: long_poll,
            sse_reconnect_interval: (s.sse_reconnect_interval_secs > 0)
                .then(|| Duration::from_secs(s.sse_reconnect_interval_secs)),
            sse_keepalive_interval: Duration::from_secs(s.sse_keepalive_secs.max(1)),
            cors_origins: self.cors_origins().unwrap_or(CorsOrigins::Any),
            cache_control: self.cache_policy().unwrap_or_default(),
            front_end: self.front_end().unwrap_or_default(),
            max_body_bytes: usize::try_from(self.limits.max_body_bytes).unwrap_or(usize::MAX),
            body_read_timeout: Duration::from_secs(s.body_read_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(s.write_timeout_secs.max(1)),
            max_pending_body_bytes: usize::try_from(self.limits.max_pending_body_bytes)
                .unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs.max(1)),
            max_connections: s.max_connections,
            rate_limit: self.rate_limit(),
            public_url: (!self.http.public_url.is_empty()).then(|| self.http.public_url.clone()),
            access_log: self.http.access_log,
            metrics: self.metrics.enabled,
            metrics_elsewhere: self.metrics_listen().is_some(),
            metrics_only: false,
            compression: self.http.compression,
            base_path: self.base_path().unwrap_or_default(),
        }
    }

    /// The certificate and key files, when HTTPS is on.
    #[must_use]
    pub fn tls_files(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let s = &self.server;
        (!s.tls_cert_file.is_empty())
            .then(|| (s.tls_cert_file.clone().into(), s.tls_key_file.clone().into()))
    }

    /// Where `/metrics` is served apart from the main port, if it is.
    #[must_use]
    pub fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address().ok().flatten().filter(|_| self.metrics.enabled)
    }

    /// `metrics.listen` as an address (`None`: empty, the main port).
    fn metrics_address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = self.metrics.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            err(format!(
                "metrics.listen `{listen}` must be an address and port, like 127.0.0.1:9464"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_brief() {
        let c = load(&[], Vec::new()).unwrap();
        assert_eq!(c.server.port, 4437);
        assert_eq!(c.server.long_poll_timeout_secs, 30);
        assert_eq!(c.server.sse_reconnect_interval_secs, 60);
        assert_eq!(c.http.cors_origins, "*");
        assert_eq!(c.http.cache_control, "no-store");
        assert_eq!(c.http().front_end, FrontEnd::Fast);
        assert_eq!(c.storage.mode, "memory");
        assert_eq!(c.storage.data_dir, PathBuf::from("./data/streams"));
        assert_eq!(c.limits.max_memory_bytes, 100 * 1024 * 1024);
        assert_eq!(c.limits.max_stream_bytes, 10 * 1024 * 1024);
        assert_eq!(c.engine().journal_bytes, 64 << 20);
        assert_eq!(c.http().rate_limit, None, "rate limiting is off by default");
    }

    #[test]
    fn rate_limit_burst_defaults_to_twice_the_rate() {
        let c = load(&[], env(&[("DS_LIMITS__RATE_LIMIT_PER_SEC", "50")])).unwrap();
        let limit = c.http().rate_limit.unwrap();
        assert_eq!((limit.per_sec, limit.burst), (50.0, 100.0));
        let both =
            env(&[("DS_LIMITS__RATE_LIMIT_PER_SEC", "5"), ("DS_LIMITS__RATE_LIMIT_BURST", "7")]);
        let limit = load(&[], both).unwrap().http().rate_limit.unwrap();
        assert_eq!((limit.per_sec, limit.burst), (5.0, 7.0));
    }

    #[test]
    fn env_overrides_with_types() {
        let c = load(
            &[],
            env(&[
                ("DS_SERVER__PORT", "8080"),
                ("DS_SERVER__LONG_POLL_TIMEOUT_MS", "250"),
                ("DS_HTTP__CORS_ORIGINS", "https://a.example, https://b.example"),
                ("DS_STORAGE__DATA_DIR", "/tmp/x"),
                ("DS_LIMITS__MAX_STREAM_BYTES", "123"),
                ("DS_STORAGE__MODE", "acid"),
                ("DS_STORAGE__ACID_SHARD_COUNT", "16"),
                ("DS_STORAGE__JOURNAL_BYTES", "0"),
                ("DS_HTTP__FRONT_END", "axum"),
                ("PATH", "/usr/bin"),
                ("DS_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.http().long_poll_timeout, Duration::from_millis(250));
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.engine().limits.max_stream_bytes, 123);
        assert_eq!((c.engine().mode, c.engine().acid_shard_count), (StorageMode::Acid, 16));
        assert_eq!(c.engine().journal_bytes, 0);
        assert!(matches!(c.http().cors_origins, CorsOrigins::List(ref l) if l.len() == 2));
        assert_eq!(c.http().front_end, FrontEnd::Axum);
    }

    #[test]
    fn the_postgres_mode_takes_its_database_from_the_environment() {
        let url = "postgres://ds@db1:5432,db2:5432/streams?target_session_attrs=read-write";
        let c = load(
            &[],
            env(&[
                ("DS_STORAGE__MODE", "postgres"),
                ("DS_STORAGE__POSTGRES_URL", url),
                ("DS_STORAGE__POSTGRES_POOL_SIZE", "32"),
            ]),
        )
        .unwrap();
        let e = c.engine();
        assert_eq!(
            (e.mode, e.postgres_url.as_str(), e.postgres_pool_size),
            (StorageMode::Postgres, url, 32)
        );
        assert_eq!(load(&[], Vec::new()).unwrap().engine().postgres_pool_size, 16);
        // The mode without a database is refused with a message naming the setting.
        let err = load(&[], env(&[("DS_STORAGE__MODE", "postgres")])).unwrap_err();
        assert!(err.to_string().contains("storage.postgres_url"), "{err}");
    }

    #[test]
    fn mistakes_are_reported_not_ignored() {
        for bad in [
            ("DS_SERVER__PORT", "eighty"),
            ("DS_SERVER__PORT", "70000"),
            ("DS_SERVER__PROT", "1"),
            ("DS_NOPE__X", "1"),
            ("DS_STORAGE__MODE", "disk"),
            ("DS_HTTP__CACHE_CONTROL", "forever"),
            ("DS_HTTP__FRONT_END", "hyper"),
            ("DS_LIMITS__READ_CHUNK_BYTES", "0"),
            ("DS_LIMITS__RATE_LIMIT_PER_SEC", "-1"),
            ("DS_LIMITS__RATE_LIMIT_PER_SEC", "2000000"),
            ("DS_LIMITS__RATE_LIMIT_BURST", "ten"),
            ("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", "18446744073709551615"),
            ("DS_SERVER__WRITE_TIMEOUT_SECS", "100000"),
            ("DS_SERVER__MAX_CONNECTIONS", "0"),
            ("DS_SERVER__WORKER_THREADS", "5000"),
            ("DS_LIMITS__MAX_PENDING_BODY_BYTES", "1"),
            ("DS_HTTP__CORS_ORIGINS", " , "),
            ("DS_HTTP__CORS_ORIGINS", "https://ok.example, bad\u{7f}origin"),
            ("DS_STORAGE__ACID_SHARD_COUNT", "3"),
            ("DS_STORAGE__ACID_SHARD_COUNT", "0"),
            ("DS_STORAGE__ACID_SHARD_COUNT", "512"),
            ("DS_STORAGE__JOURNAL_BYTES", "4096"),
            ("DS_STORAGE__JOURNAL_BYTES", "8589934592"),
            ("DS_STORAGE__MODE", "postgres"),
            ("DS_STORAGE__POSTGRES_POOL_SIZE", "1"),
            ("DS_STORAGE__POSTGRES_POOL_SIZE", "1001"),
            ("DS_METRICS__LISTEN", "nowhere"),
            ("DS_METRICS__ENABLED", "yes"),
        ] {
            assert!(load(&[], env(&[bad])).is_err(), "{bad:?}");
        }
        assert!(load(&[PathBuf::from("/nonexistent.toml")], Vec::new()).is_err());
    }

    #[test]
    fn files_layer_under_env() {
        let dir = std::env::temp_dir().join(format!("ds-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "[server]\nport = 9000\nsse_reconnect_interval_secs = 0\n").unwrap();
        let args = vec![file.clone()];
        let c = load(&args, Vec::new()).unwrap();
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.http().sse_reconnect_interval, None);
        let c = load(&args, env(&[("DS_SERVER__PORT", "9001")])).unwrap();
        assert_eq!(c.server.port, 9001);
        std::fs::write(&file, "[server]\nportt = 1\n").unwrap();
        assert!(load(&args, Vec::new()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_in_connection_strings_are_redacted() {
        for (url, shown) in [
            ("postgres://ds:pw@db/streams", "postgres://ds:<redacted>@db/streams"),
            ("postgresql://ds@db/streams", "postgresql://ds@db/streams"),
            (
                "postgres://ds:p%40ss@a,b/s?sslmode=require",
                "postgres://ds:<redacted>@a,b/s?sslmode=require",
            ),
            (
                "postgres://db/s?user=ds&password=pw&x=1",
                "postgres://db/s?user=ds&password=<redacted>&x=1",
            ),
            (
                "host=db user=ds password=pw dbname=s",
                "host=db user=ds password=<redacted> dbname=s",
            ),
            ("host=db password = 'a b\\'c' dbname=s", "host=db password = <redacted> dbname=s"),
            ("host=db sslpassword=pw", "host=db sslpassword=<redacted>"),
            ("", ""),
        ] {
            assert_eq!(redact_postgres_url(url), shown, "{url}");
        }
        let mut c = Config::default();
        c.subscriptions.claim_secret = "secret".into();
        let shown = c.redacted_toml();
        assert!(shown.contains("claim_secret = \"<redacted>\"") && !shown.contains("\"secret\""));
        c.subscriptions.claim_secret.clear();
        assert!(
            c.redacted_toml().contains("claim_secret = \"\""),
            "an empty secret is shown empty"
        );
    }
}
