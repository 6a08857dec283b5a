//! [`AppState`]: what every handler gets.

use std::sync::Arc;

use ds_engine::Engine;
use tokio::sync::watch;

use crate::config::HttpConfig;

/// Shared by all handlers; cloning it clones three pointers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The storage engine.
    pub engine: Arc<Engine>,
    /// HTTP settings.
    pub config: Arc<HttpConfig>,
    /// Becomes `true` when the server shuts down, so live reads end cleanly.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State for a server that shuts down when `shutdown` turns `true`.
    #[must_use]
    pub fn new(
        engine: Arc<Engine>,
        config: HttpConfig,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        AppState { engine, config: Arc::new(config), shutdown }
    }

    /// Resolves when the server starts shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}
