//! # ds-server
//!
//! Wires configuration, the engine and the HTTP server together. The `ds-server` binary is a
//! thin `main` over this library (it adds logging and signal handling).

pub mod cli;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use ds_engine::Engine;
use ds_engine::subscription::Subscriptions;
use ds_http::AppState;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError};

/// A server running in this process.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
    subscriptions: JoinHandle<()>,
    /// The metrics listener (`DS_METRICS__LISTEN`) and its task, when there is one.
    metrics: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    engine: Arc<Engine>,
    engine_failed: Arc<std::sync::Mutex<Option<String>>>,
    tls: Option<Arc<ds_http::tls::Tls>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address, when `/metrics` is served apart.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// Whether the server speaks HTTPS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What reads the TLS certificate and key files again (on SIGHUP): new connections
    /// get what they hold then, open ones keep theirs; nothing to do without TLS. It fails
    /// if a file cannot be read or the key does not match, and the certificate in use stays.
    pub fn tls_reloader(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let tls = self.tls.clone();
        move || tls.as_ref().map_or(Ok(()), |tls| tls.reload())
    }

    /// A handle that starts the shutdown when sent `true`.
    #[must_use]
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Stops accepting, ends live reads, lets in-flight requests finish, and waits.
    ///
    /// # Errors
    /// If the server task failed.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has shut down (after [`RunningServer::shutdown_handle`]), then
    /// checkpoints and syncs the persistent stores and releases the data directory.
    ///
    /// # Errors
    /// If the server task failed, recovery failed, or the final sync did.
    pub async fn wait(self) -> std::io::Result<()> {
        let mut served = self.serve.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Some((_, metrics)) = self.metrics {
            let metrics = metrics.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            served = served.and(metrics);
        }
        self.sweeper.abort();
        self.subscriptions.abort();
        let stopped = self.engine.shutdown().await.map_err(std::io::Error::other);
        if let Some(why) = self.engine_failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(std::io::Error::other(format!("recovery failed: {why}")));
        }
        served.and(stopped)
    }
}

/// Opens the engine, binds, and starts serving in the background.
///
/// # Errors
/// The engine cannot open (an unavailable mode) or the address cannot be bound.
pub async fn start(config: &Config) -> Result<RunningServer, Box<dyn std::error::Error>> {
    let tls = match config.tls_files() {
        Some((cert, key)) => Some(Arc::new(ds_http::tls::Tls::load(&cert, &key)?)),
        None => None,
    };
    let engine = Arc::new(Engine::open(config.engine())?);
    let listener = TcpListener::bind((config.server.host.as_str(), config.server.port)).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let sender = Arc::new(ds_http::webhook::WebhookClient::new()?);
    let subs = Subscriptions::new(engine.clone(), config.subscriptions(), sender);
    let mut state =
        AppState::new(engine.clone(), config.http(), rx).with_subscriptions(subs.clone());
    if let Some(tls) = &tls {
        state = state.with_tls(tls.clone());
    }
    let sweeper = tokio::spawn(engine.clone().run_sweeper());
    // The subscriptions load once recovery is done, then run their scheduler; if they
    // cannot load (unreadable keys or control database), the server stops.
    let subscriptions_failed = {
        let tx = tx.clone();
        move |why: String| {
            tracing::error!(error = %why, "subscriptions could not start");
            let _ = tx.send(true);
        }
    };
    let metrics = match config.metrics_listen() {
        Some(at) => {
            let listener = TcpListener::bind(at).await?;
            let at = listener.local_addr()?;
            tracing::info!(addr = %at, "metrics listening");
            Some((at, tokio::spawn(ds_http::serve(listener, state.metrics_only()))))
        }
        None => None,
    };
    let serve = tokio::spawn(ds_http::serve(listener, state));
    tracing::info!(%addr, mode = config.storage.mode, https = tls.is_some(), "ds-server listening");
    // Recovery runs in the background (/readyz says when it is done); if it fails, the
    // server stops rather than answer 503 forever.
    let engine_failed = Arc::new(std::sync::Mutex::new(None));
    let subscriptions = {
        let failed = engine_failed.clone();
        tokio::spawn(async move {
            if let Err(why) = subs.run().await {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(why.clone());
                }
                subscriptions_failed(why);
            }
        })
    };
    {
        let (engine, failed, tx) = (engine.clone(), engine_failed.clone(), tx.clone());
        tokio::spawn(async move {
            if let Err(why) = engine.ready().await {
                if let Ok(mut f) = failed.lock() {
                    *f = Some(why);
                }
                let _ = tx.send(true);
            }
        });
    }
    Ok(RunningServer {
        addr,
        shutdown: tx,
        serve,
        sweeper,
        subscriptions,
        metrics,
        engine,
        engine_failed,
        tls,
    })
}
