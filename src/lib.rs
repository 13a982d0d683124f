//! natter: a self-hosted group chat server in one binary.
//!
//! `build` opens storage, wires the service, hub and HTTP routes, and binds; tests drive the
//! returned `App` on `127.0.0.1:0`.

pub mod api;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod listener;
pub mod mail;
pub mod model;
pub mod ratelimit;
pub mod server;
pub mod store;

use chat::Service;
use config::{Config, MailProvider};
use events::hub::{Hub, HubLimits, HubStats};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use store::sled::{SledStore, SyncMode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the server could not start; the message is for the operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A running server.
pub struct App {
    addr: SocketAddr,
    service: Arc<Service>,
    store: Arc<SledStore>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// Starts natter: storage, service, background tasks, then the listener.
pub async fn build(config: Config) -> Result<App, StartError> {
    let config = Arc::new(config);
    if config.metrics.listen.is_some() {
        return Err(StartError(
            "metrics.listen is set, but this build of natter has no metrics listener".into(),
        ));
    }
    let mode = match config.durability {
        config::DurabilityMode::Sync => SyncMode::Sync,
        config::DurabilityMode::Relaxed => SyncMode::Relaxed,
    };
    // With database_url: the outbox on, and an empty data directory restored from the mirror.
    let (store, mirror) = store::mirror::start::open_store(&config, mode)
        .await
        .map_err(StartError)?;
    let secret = secret_key(&config).map_err(StartError)?;
    let transport = mail_transport(&config)?;
    let hub = Arc::new(Hub::new(HubLimits {
        capacity: config.event_queue_capacity,
        queues_per_session: config.max_queues_per_session,
    }));
    let dyn_store: Arc<dyn Store> = store.clone();
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let service = Service::start(config.clone(), dyn_store.clone(), hub, mail_wake.clone())
        .await
        .map_err(StartError)?;
    let mut background = vec![
        tokio::spawn(service.clone().run_sweeper()),
        tokio::spawn(service.clone().publish_durable_events()),
    ];
    if let Some(target) = mirror {
        background.push(store::mirror::start::spawn_worker(store.clone(), target));
    }
    if let Some(transport) = transport {
        background.push(tokio::spawn(mail::outbox::run(
            dyn_store,
            transport,
            config.public_url.clone(),
            mail_wake,
        )));
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let signer = auth::cookie::CookieSigner::new(secret, config.secure_cookies());
    let limits = Arc::new(ratelimit::RateLimits::new(&config.rate_limit));
    background.push(tokio::spawn(forget_idle_limits(limits.clone())));
    let routes = api::routes(api::Ctx::new(service.clone(), signer, limits));
    let (stop_server, stopped) = oneshot::channel::<()>();
    let connection_limits = listener::ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.trusted_proxies.clone(),
    );
    let server = tokio::spawn(server::serve(
        listener,
        routes,
        connection_limits,
        config.header_read_timeout,
        async {
            let _ = stopped.await;
        },
    ));
    log::info!(
        "natter listening on {addr} ({} mode, durability {:?})",
        if config.dev { "dev" } else { "production" },
        config.durability
    );
    // Tells systemd (Type=notify) we are ready; a no-op elsewhere.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    Ok(App {
        addr,
        service,
        store,
        stop_server: Some(stop_server),
        server,
        background,
    })
}

impl App {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The event hub's counters: sessions, queues, buffered events.
    pub fn hub_stats(&self) -> HubStats {
        self.service.hub.stats()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_stopped(self, mut signals: StopSignals) -> Result<(), StartError> {
        signals.recv().await;
        log::info!("shutting down");
        self.shutdown().await
    }

    /// Answers parked polls, stops the listener, saves event queues and flushes storage.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.service.hub.shutdown();
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        // In-flight requests get a few seconds; parked polls already returned.
        if tokio::time::timeout(Duration::from_secs(4), &mut self.server)
            .await
            .is_err()
        {
            log::warn!("requests still running after 4 s were cut off");
            self.server.abort();
        }
        for task in &self.background {
            task.abort();
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        let service = self.service;
        let store = self.store;
        tokio::task::spawn_blocking(move || {
            // Everything committed is flushed, so every staged event can reach its queue first.
            store.flush()?;
            service.hub.release(store.write_epoch());
            store.save_queues(&service.hub.snapshot())?;
            drop(service);
            store.close()
        })
        .await
        .map_err(|e| StartError(format!("shutdown failed: {e}")))?
        .map_err(|e| StartError(format!("flushing storage at shutdown failed: {e}")))?;
        log::info!("stopped");
        Ok(())
    }
}

/// Rate-limit state of idle clients is dropped every minute.
async fn forget_idle_limits(limits: Arc<ratelimit::RateLimits>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        limits.forget_idle();
    }
}

/// SIGINT and SIGTERM, caught from the moment this is created. Create it before `build`: once
/// natter says it is listening (or tells systemd it is ready) a stop signal must shut it down
/// gracefully, not kill it.
pub struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers; needs a running tokio runtime.
    pub fn install() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the first stop signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.term.is_none() && self.interrupt.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The configured way out for mail; `None` with `provider = "none"`.
fn mail_transport(config: &Config) -> Result<Option<mail::Transport>, StartError> {
    match config.mail.provider {
        MailProvider::Log => Ok(Some(mail::Transport::Log)),
        MailProvider::None => Ok(None),
        MailProvider::Sendgrid => {
            // Config validation already demands a key with this provider.
            let key = config.mail.sendgrid_key.as_ref().ok_or_else(|| {
                StartError("mail.sendgrid_key is required with provider \"sendgrid\"".into())
            })?;
            let client = mail::sendgrid::SendGrid::new(
                &config.mail.sendgrid_api_url,
                key.expose(),
                &config.mail.from,
            )
            .map_err(StartError)?;
            Ok(Some(mail::Transport::SendGrid(client)))
        }
    }
}

/// The cookie signing key: from the config, or generated once and kept in `data_dir/secret_key`.
fn secret_key(config: &Config) -> Result<Vec<u8>, String> {
    if let Some(secret) = &config.secret_key {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("secret_key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
        Ok(_) => Err(format!(
            "{} is shorter than 32 bytes; delete it to generate a new one",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_secret(&path),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn generate_secret(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("the OS random generator failed: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(&key)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    log::info!("generated a new secret key in {}", path.display());
    Ok(key.to_vec())
}
