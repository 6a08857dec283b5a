//! [`AppState`]: what every handler gets.

use std::sync::Arc;

use ds_engine::Engine;
use ds_engine::subscription::Subscriptions;
use tokio::sync::watch;

use crate::body::{BodyLimits, ByteBudget};
use crate::config::HttpConfig;
use crate::rate::RateLimiter;

/// Shared by all handlers; cloning it clones a few pointers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The storage engine.
    pub engine: Arc<Engine>,
    /// HTTP settings.
    pub config: Arc<HttpConfig>,
    /// Body size limit, deadline and the server-wide budget of body bytes in flight.
    pub body_limits: BodyLimits,
    /// Becomes `true` when the server shuts down, so live reads end cleanly.
    pub shutdown: watch::Receiver<bool>,
    /// Per-client token buckets, when a rate limit is configured.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The subscription service (`None`: the control API answers 404).
    pub subscriptions: Option<Arc<Subscriptions>>,
    /// The metrics (`None` when `DS_METRICS__ENABLED` is false: `/metrics` answers 404).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// HTTPS: every connection starts with a TLS handshake (`None`: plain HTTP).
    pub tls: Option<Arc<crate::tls::Tls>>,
}

impl AppState {
    /// State for a server that shuts down when `shutdown` turns `true`.
    #[must_use]
    pub fn new(
        engine: Arc<Engine>,
        config: HttpConfig,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let body_limits = BodyLimits {
            max_bytes: config.max_body_bytes,
            timeout: config.body_read_timeout,
            budget: Arc::new(ByteBudget::new(config.max_pending_body_bytes)),
        };
        let rate_limiter = config.rate_limit.map(|limit| Arc::new(RateLimiter::new(limit)));
        let metrics =
            config.metrics.then(|| Arc::new(crate::metrics::Metrics::new(engine.clone())));
        AppState {
            engine,
            config: Arc::new(config),
            body_limits,
            shutdown,
            rate_limiter,
            subscriptions: None,
            metrics,
            tls: None,
        }
    }

    /// The state of the metrics listener (`DS_METRICS__LISTEN`): the same metrics, and
    /// nothing but `GET /metrics` answered, over plain HTTP (scrapers on an internal
    /// address; HTTPS is the main port's).
    #[must_use]
    pub fn metrics_only(&self) -> AppState {
        let config =
            HttpConfig { metrics_only: true, metrics_elsewhere: false, ..(*self.config).clone() };
        AppState { config: Arc::new(config), tls: None, ..self.clone() }
    }

    /// The same state serving HTTPS with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> AppState {
        self.tls = Some(tls);
        self
    }

    /// The same state serving `subscriptions` under `{base}/__ds/`.
    #[must_use]
    pub fn with_subscriptions(mut self, subscriptions: Arc<Subscriptions>) -> AppState {
        self.subscriptions = Some(subscriptions);
        self
    }

    /// Whether the server serves everything: the engine has recovered and the
    /// subscriptions are loaded (`/readyz`).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.engine.is_ready() && self.subscriptions.as_ref().is_none_or(|s| s.is_ready())
    }

    /// Resolves when the server starts shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ds_engine::EngineConfig;
    use ds_engine::subscription::Settings;

    /// Regression: `/readyz` said ready while the subscriptions were still loading, and the
    /// first subscription request after it got a 503.
    #[tokio::test]
    async fn ready_waits_for_the_subscriptions() {
        let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
        let sender = Arc::new(crate::webhook::WebhookClient::new().unwrap());
        let subs = Subscriptions::new(engine.clone(), Settings::default(), sender);
        let (_tx, rx) = watch::channel(false);
        let app = AppState::new(engine, HttpConfig::default(), rx).with_subscriptions(subs.clone());
        assert!(!app.is_ready(), "loading");
        subs.load().await.unwrap();
        assert!(app.is_ready());
    }
}
