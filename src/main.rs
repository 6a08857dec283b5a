//! `ds-server`: read the command line and the configuration, set up logging, serve until
//! SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use ds_server::cli::{Cli, LogFormat};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The exit code of a configuration that cannot be used (clap's, for usage errors, too).
const BAD_CONFIGURATION: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = LogFormat::from_env(std::env::var("DS_LOG_FORMAT").ok().as_deref());
    let loaded = ds_server::config::load(&cli.config, std::env::vars()).map_err(|e| e.to_string());
    let (config, log_format) = match loaded.and_then(|config| Ok((config, log_format?))) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("ds-server: {e}");
            return ExitCode::from(BAD_CONFIGURATION);
        }
    };
    if cli.check_config {
        // The certificate and key are read as the server would read them at start.
        if let Some((cert, key)) = config.tls_files()
            && let Err(e) = ds_http::tls::Tls::load(&cert, &key)
        {
            eprintln!("ds-server: {e}");
            return ExitCode::from(BAD_CONFIGURATION);
        }
        #[allow(clippy::print_stdout, reason = "--check-config prints the settings")]
        {
            print!("{}", config.redacted_toml());
        }
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("DS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
        LogFormat::Json => {
            registry
                .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
                .init();
        }
    }
    raise_open_file_limit(&config);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ds-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match ds_server::start(&config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("ds-server: {e}");
                return ExitCode::FAILURE;
            }
        };
        if server.is_tls() {
            reload_on_sighup(&server);
        }
        let shutdown = server.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown.send(true);
        });
        match server.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ds-server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reloads the TLS certificate on every SIGHUP (new connections get it; open ones keep
/// theirs); a reload that fails is logged and the old certificate stays.
fn reload_on_sighup(server: &ds_server::RunningServer) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; the TLS certificate will not be reloaded");
            return;
        };
        let reload = server.tls_reloader();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(why) => {
                        tracing::error!(error = %why, "TLS certificate not reloaded; the old one stays")
                    }
                }
            }
        });
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Raises the soft limit on open files to the hard limit: connections and log files each
/// need a descriptor, and the usual soft limit (1024) is below what the defaults allow.
fn raise_open_file_limit(config: &ds_server::Config) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        limit.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let wanted = (config.server.max_connections + config.storage.max_open_files + 64) as u64;
    if soft < wanted {
        tracing::warn!(
            limit = soft,
            wanted,
            "the open-file limit is below max_connections + max_open_files; lower them or raise \
             the limit (ulimit -n), or requests will fail when it is reached"
        );
    }
}
