//! The running server: `build` takes the configuration and returns a started `App`, one call
//! per step (storage, service, background tasks, routes, listener); `App` serves until a stop
//! signal and shuts down gracefully.

use crate::chat::Service;
use crate::config::{self, Config};
use crate::events::hub::{Hub, HubLimits, HubStats};
use crate::server::{listener, ratelimit};
use crate::store::sled::{SledStore, SyncMode};
use crate::store::{self, Store};
use crate::{api, auth, error, mail, server, telemetry};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::filters::BoxedFilter;
use warp::reply::Response;

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
    metrics_addr: Option<SocketAddr>,
    service: Arc<Service>,
    hub: Arc<Hub>,
    store: Backend,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    /// Several nodes: the reader of the shared log.
    log_reader: Option<LogReader>,
}

/// Starts natter: storage, service, background tasks, then the listener.
pub async fn build(mut config: Config) -> Result<App, StartError> {
    // Bound first only when links must name a port that binding chooses (dev mode, port 0).
    let early = bind_before_start(&mut config).await?;
    let config = Arc::new(config);
    // Installed first, so the flusher's first fsyncs are measured too.
    let metrics = install_metrics(&config)?;
    // With database_url: the outbox on, and an empty data directory restored from the mirror.
    let (store, mirror) = open_store(&config).await?;
    let secret = store.secret_key(&config).await?;
    let transport = mail::Transport::from_config(&config).map_err(StartError)?;
    let hub = new_hub(&config);
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let service = Service::start(
        config.clone(),
        store.store(),
        hub.clone(),
        mail_wake.clone(),
    )
    .await
    .map_err(StartError)?;
    let log_reader = store.follow(&config, &service).await?;
    let mut background = spawn_background(&config, &service, &store, mirror, transport, mail_wake);
    let (listener, addr) = match early {
        Some(bound) => bound,
        None => bind(config.listen).await?,
    };
    let metrics_listener = bind_metrics(&config).await?;
    let (routes, forget_limits) = api_routes(&config, &service, secret);
    background.push(forget_limits);
    // The API and the metrics listener stall-protect their connections alike.
    let timeouts = timeouts(&config);
    let (stop_server, server) = spawn_server(&config, listener, routes, timeouts);
    announce(&config, addr);
    let metrics_addr = serve_metrics(
        metrics_listener,
        metrics,
        &service,
        timeouts,
        &mut background,
    );
    // The startup lines out now, not at the log's next flush: operators and scripts wait for them.
    log::logger().flush();
    // Tells systemd (Type=notify) we are ready; a no-op elsewhere.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    Ok(App {
        addr,
        metrics_addr,
        service,
        hub,
        store,
        stop_server: Some(stop_server),
        server,
        background,
        log_reader,
    })
}

/// In dev mode with port 0 and no `public_url`: binds now and points `public_url` at the port
/// that binding chose, so that links name it.
async fn bind_before_start(
    config: &mut Config,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, StartError> {
    if config.dev && !config.public_url.is_set() && config.listen.port() == 0 {
        let (listener, addr) = bind(config.listen).await?;
        config.follow_served_address(addr);
        return Ok(Some((listener, addr)));
    }
    Ok(None)
}

/// The metrics recorder, when `metrics.listen` is set.
fn install_metrics(config: &Config) -> Result<Option<PrometheusHandle>, StartError> {
    match config.metrics.listen {
        Some(_) => Ok(Some(telemetry::install().map_err(StartError)?)),
        None => Ok(None),
    }
}

/// Several nodes: the shared log's reader.
#[cfg(feature = "pg")]
type LogReader = Arc<store::postgres::tail::Tail>;
#[cfg(not(feature = "pg"))]
type LogReader = std::convert::Infallible;

/// Several nodes: stops reading the shared log (at shutdown).
#[cfg(feature = "pg")]
fn stop_reading(reader: LogReader) {
    reader.stop();
}
#[cfg(not(feature = "pg"))]
fn stop_reading(reader: LogReader) {
    match reader {}
}

/// The store the server runs on, and what its kind needs besides the `Store` trait.
enum Backend {
    Sled(Arc<SledStore>),
    #[cfg(feature = "pg")]
    Postgres(Arc<store::postgres::PgStore>),
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sled(sled) => sled.clone(),
            #[cfg(feature = "pg")]
            Backend::Postgres(pg) => pg.clone(),
        }
    }

    /// The cookie key: configured, else generated once and kept where the data lives.
    async fn secret_key(&self, config: &Config) -> Result<Vec<u8>, StartError> {
        #[cfg(feature = "pg")]
        if let Backend::Postgres(pg) = self
            && config.secret_key.is_none()
        {
            let (pg, fresh) = (pg.clone(), auth::secret_key::fresh().map_err(StartError)?);
            return tokio::task::spawn_blocking(move || pg.secret_key(fresh))
                .await
                .map_err(|e| StartError(format!("reading the secret key failed: {e}")))?
                .map_err(|e| StartError(format!("reading the secret key failed: {e}")));
        }
        auth::secret_key::load(config).map_err(StartError)
    }

    /// Several nodes: starts reading the shared log into `service`, and waits for it to catch up.
    async fn follow(
        &self,
        config: &Config,
        service: &Arc<Service>,
    ) -> Result<Option<LogReader>, StartError> {
        #[cfg(feature = "pg")]
        if let Backend::Postgres(pg) = self
            && config.cluster
        {
            let applier = service.clone();
            let tail = pg
                .follow(Box::new(move |batch| applier.apply_followed(batch)))
                .map_err(|e| StartError(format!("reading the shared log failed: {e}")))?;
            service.follow_with(tail.clone());
            service.replay_log().await.map_err(StartError)?;
            return Ok(Some(tail));
        }
        let _ = (config, service);
        Ok(None)
    }

    /// Closes the store once everything is on disk; blocking. Returns once offline commands
    /// (or a new server) can open it.
    fn close(self) -> store::StoreResult<()> {
        match self {
            Backend::Sled(sled) => SledStore::close_and_release(sled),
            #[cfg(feature = "pg")]
            Backend::Postgres(pg) => pg.close(),
        }
    }
}

/// The store of `storage` with the configured durability, and the mirror's target when sled
/// has one.
async fn open_store(
    config: &Config,
) -> Result<(Backend, Option<store::mirror::start::Target>), StartError> {
    let mode = match config.durability {
        config::DurabilityMode::Sync => SyncMode::Sync,
        config::DurabilityMode::Relaxed => SyncMode::Relaxed,
    };
    match config.storage {
        config::StorageKind::Sled => store::mirror::start::open_store(config, mode)
            .await
            .map(|(sled, target)| (Backend::Sled(sled), target))
            .map_err(|e| StartError(e.to_string())),
        config::StorageKind::Postgres => open_postgres(config, mode).await,
    }
}

#[cfg(feature = "pg")]
async fn open_postgres(
    config: &Config,
    mode: SyncMode,
) -> Result<(Backend, Option<store::mirror::start::Target>), StartError> {
    if let Some(url) = &config.database_url
        && let Ok(target) = store::mirror::pg::parse(url.expose())
        && let Some(warning) = store::mirror::pg::exposure_warning(&target)
    {
        log::warn!("{warning}");
    }
    let relaxed = mode == SyncMode::Relaxed;
    let config = config.clone();
    let pg = tokio::task::spawn_blocking(move || {
        store::postgres::PgStore::open_configured(&config, relaxed)
    })
    .await
    .map_err(|e| StartError(format!("opening PostgreSQL failed: {e}")))?
    .map_err(|e| StartError(format!("opening the PostgreSQL store failed: {e}")))?;
    Ok((Backend::Postgres(pg), None))
}

#[cfg(not(feature = "pg"))]
async fn open_postgres(
    _config: &Config,
    _mode: SyncMode,
) -> Result<(Backend, Option<store::mirror::start::Target>), StartError> {
    Err(StartError(
        "storage = \"postgres\", but this build of natter has no PostgreSQL support".into(),
    ))
}

fn new_hub(config: &Config) -> Arc<Hub> {
    let limits = HubLimits {
        capacity: config.event_queue_capacity,
        queues_per_session: config.max_queues_per_session,
    };
    // Several nodes number events by their place in the shared log, the same on every node.
    let hub = if config.cluster {
        Hub::positioned(limits)
    } else {
        Hub::new(limits)
    };
    Arc::new(hub.with_batch_delay(config.event_batch_delay))
}

/// The presence sweeper, the event publisher, the mirror worker and the mail outbox sender.
fn spawn_background(
    config: &Config,
    service: &Arc<Service>,
    store: &Backend,
    mirror: Option<store::mirror::start::Target>,
    transport: Option<mail::Transport>,
    mail_wake: Arc<tokio::sync::Notify>,
) -> Vec<JoinHandle<()>> {
    let mut background = vec![
        tokio::spawn(service.clone().run_sweeper()),
        tokio::spawn(service.clone().publish_durable_events()),
    ];
    if let (Some(target), Backend::Sled(sled)) = (mirror, store) {
        background.push(store::mirror::start::spawn_worker(
            sled.clone(),
            target,
            config,
        ));
    }
    if let Some(transport) = transport {
        background.push(tokio::spawn(mail::outbox::run(
            store.store(),
            transport,
            config.public_url.to_string(),
            mail_wake,
            config.cluster,
        )));
    }
    background
}

/// The metrics listener, when `metrics.listen` is set.
async fn bind_metrics(config: &Config) -> Result<Option<tokio::net::TcpListener>, StartError> {
    match config.metrics.listen {
        Some(addr) => Ok(Some(server::metrics::bind(addr).await.map_err(StartError)?)),
        None => Ok(None),
    }
}

/// The API's routes, signing cookies with `secret`, and the task that forgets idle clients'
/// rate limits.
fn api_routes(
    config: &Config,
    service: &Arc<Service>,
    secret: Vec<u8>,
) -> (BoxedFilter<(Response,)>, JoinHandle<()>) {
    let signer = auth::cookie::CookieSigner::new(secret, config.secure_cookies());
    let limits = Arc::new(ratelimit::RateLimits::new(&config.rate_limit));
    let forget = tokio::spawn(forget_idle_limits(limits.clone()));
    let routes = api::routes(api::Ctx::new(service.clone(), signer, limits));
    (routes, forget)
}

fn timeouts(config: &Config) -> server::Timeouts {
    server::Timeouts {
        header_read: config.header_read_timeout,
        idle: config.idle_timeout,
        write: config.write_timeout,
    }
}

/// Serves the API on `listener` with the connection caps until the returned sender fires.
fn spawn_server(
    config: &Config,
    listener: tokio::net::TcpListener,
    routes: BoxedFilter<(Response,)>,
    timeouts: server::Timeouts,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
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
        timeouts,
        async {
            let _ = stopped.await;
        },
    ));
    (stop_server, server)
}

/// One line an operator can grep for: where, how, and with what (no secrets); and a warning
/// when a production `public_url` still names this machine.
fn announce(config: &Config, addr: SocketAddr) {
    log::info!(
        "natter {} listening on {addr} ({} mode, durability {}, {}, mail {}, public_url {})",
        env!("CARGO_PKG_VERSION"),
        if config.dev { "dev" } else { "production" },
        config.durability.as_str(),
        match config.storage {
            config::StorageKind::Sled => format!("data_dir {}", config.data_dir.display()),
            config::StorageKind::Postgres => "storage postgres".to_owned(),
        },
        config.mail.provider.as_str(),
        config.public_url
    );
    if !config.dev && points_here(&config.public_url) {
        log::warn!(
            "public_url is {}: set it to the address users open (mailed links, Secure cookies \
             and the same-origin check behind a TLS proxy depend on it)",
            config.public_url
        );
    }
}

/// Serves `/metrics` on its listener, when both it and the recorder exist; returns its address.
fn serve_metrics(
    listener: Option<tokio::net::TcpListener>,
    handle: Option<PrometheusHandle>,
    service: &Arc<Service>,
    timeouts: server::Timeouts,
    background: &mut Vec<JoinHandle<()>>,
) -> Option<SocketAddr> {
    let (Some(listener), Some(handle)) = (listener, handle) else {
        return None;
    };
    let metrics_addr = listener.local_addr().ok();
    if let Some(bound) = metrics_addr {
        log::info!("serving metrics on http://{bound}/metrics");
    }
    let service = service.clone();
    background.extend(server::metrics::spawn(
        listener,
        handle,
        move || service.metrics_sample(),
        timeouts,
    ));
    metrics_addr
}

impl App {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address, when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The event hub's counters: sessions, queues, buffered events.
    pub fn hub_stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// Runs one presence sweep now, taking offline every session idle since `cutoff`, as if
    /// `inactivity_timeout` had passed since then (tests sweep deterministically through it).
    pub async fn sweep_idle_since(
        &self,
        cutoff: std::time::Instant,
    ) -> Result<(), error::ApiError> {
        self.service.sweep_idle_since(Some(cutoff)).await
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
        self.hub.shutdown();
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
        let_mirror_catch_up(&*self.store.store()).await;
        for task in &self.background {
            task.abort();
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        let (service, hub, backend) = (self.service, self.hub, self.store);
        let log_reader = self.log_reader.take();
        tokio::task::spawn_blocking(move || {
            let store = backend.store();
            // Everything committed is flushed, so every staged event can reach its queue first.
            store.flush()?;
            if let Some(reader) = log_reader {
                // The other nodes hold the queues; the log is theirs to read on.
                stop_reading(reader);
            } else {
                hub.release(store.write_epoch());
                store.save_queues(&hub.snapshot())?;
            }
            drop((service, store));
            backend.close()
        })
        .await
        .map_err(|e| StartError(format!("shutdown failed: {e}")))?
        .map_err(|e| StartError(format!("flushing storage at shutdown failed: {e}")))?;
        log::info!("stopped");
        Ok(())
    }
}

/// How long a graceful stop waits for a connected mirror to apply what is left in its outbox.
const MIRROR_CATCH_UP: Duration = Duration::from_secs(2);

/// Gives a connected mirror a moment to apply the last changes, so that a stop right after a
/// change leaves a complete copy; whatever is still waiting is applied after the next start.
async fn let_mirror_catch_up(store: &dyn Store) {
    use crate::store::mirror::MirrorState;
    let deadline = tokio::time::Instant::now() + MIRROR_CATCH_UP;
    loop {
        let report = store.mirror_report();
        let connected = matches!(report.state, MirrorState::Ok | MirrorState::Behind);
        if !connected || report.outbox_len == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API listener and the address it got (the real port when `listen` names port 0).
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    Ok((listener, addr))
}

/// Whether a URL names this machine (the default `http://localhost:8080` and the like).
fn points_here(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    use super::points_here;

    #[test]
    fn local_public_urls_are_recognized() {
        for url in [
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:8080/chat",
            "http://[::1]:8080",
        ] {
            assert!(points_here(url), "{url}");
        }
        for url in [
            "https://chat.example.org",
            "https://chat.example.org:8443/x",
            "http://192.0.2.7:8080",
            "http://[2001:db8::1]",
        ] {
            assert!(!points_here(url), "{url}");
        }
    }
}
