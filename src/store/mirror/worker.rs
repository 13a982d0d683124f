//! The mirror worker: drains the outbox into PostgreSQL in order, in batches, one transaction
//! per batch, and retries with backoff while PostgreSQL is away.

use super::apply::{ApplyError, Statements, apply};
use super::outbox::Queued;
use super::pg::{self, ConnectError, PgError, Target};
use super::schema::{self, SchemaError};
use super::status::{MirrorReport, MirrorState};
use crate::store::StoreError;
use crate::store::sled::SledStore;
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinError;
use tokio_postgres::Client;

/// Entries applied per PostgreSQL transaction.
const BATCH: usize = 500;
/// First and longest pause between attempts while PostgreSQL is away.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle worker looks at the connection and the lag.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// While down or behind, the log is reminded this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// Why the worker is not applying: logged, then retried with backoff.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Reading the mirror's label.
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(
        "the mirror database {target} holds another natter's copy (label {label}, this data \
         directory's is {ours}): refusing to replace it. Give database_url a database of its \
         own, or set mirror_replace_foreign = true to replace its contents with this data \
         directory's"
    )]
    Foreign {
        target: String,
        label: String,
        ours: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking storage task ended without an answer.
    #[error(transparent)]
    Task(#[from] JoinError),
}

/// A live connection with its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

/// What the worker needs besides the store: where the mirror is and what it may replace.
pub struct Options {
    pub target: Target,
    /// `mirror_replace_foreign`: a database labelled by another natter may be replaced.
    pub replace_foreign: bool,
}

/// Runs until the task is aborted (shutdown). What it has not applied stays in the outbox.
pub async fn run(store: Arc<SledStore>, options: Options) {
    let config = options.target;
    let Some(shared) = store.mirror_shared() else {
        return;
    };
    let target = pg::describe(&config);
    let mut log = LagLog::default();
    let mut connection: Option<Connection> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        if connection.as_ref().is_none_or(|c| c.client.is_closed()) {
            connection = None;
            match open(&config, &store, &target, options.replace_foreign).await {
                Ok(c) => {
                    shared.set_connected(true);
                    log::info!("PostgreSQL mirror connected to {target}");
                    connection = Some(c);
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    shared.set_connected(false);
                    log.failed(&target, &e, &store.mirror_status(), backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let batch = match read_batch(&store).await {
            Ok(batch) => batch,
            Err(e) => {
                log::error!("PostgreSQL mirror: reading the outbox failed: {e}");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        if batch.is_empty() {
            log.observe(&store.mirror_status());
            // A missed wake-up costs at most one tick.
            let _ = tokio::time::timeout(IDLE_TICK, shared.wake.notified()).await;
            continue;
        }
        let keys: Vec<u64> = batch.iter().map(|(key, _)| *key).collect();
        match apply(&mut conn.client, &conn.statements, &batch).await {
            Ok(()) => {
                let done = store.clone();
                let removed = tokio::task::spawn_blocking(move || done.outbox_applied(&keys)).await;
                if !matches!(removed, Ok(Ok(()))) {
                    // Harmless: the entries are applied again, which changes nothing.
                    log::error!("PostgreSQL mirror: removing applied entries failed");
                }
                log.applied(batch.len());
                log.observe(&store.mirror_status());
            }
            Err(e) => {
                shared.set_connected(false);
                connection = None;
                log.failed(&target, &e, &store.mirror_status(), backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn open(
    config: &Target,
    store: &Arc<SledStore>,
    target: &str,
    replace_foreign: bool,
) -> Result<Connection, WorkerError> {
    let mut client = pg::connect(config).await?;
    schema::migrate(&mut client).await?;
    schema::lock_writer(&client, target).await?;
    check_instance(&client, store, target, replace_foreign).await?;
    let statements = Statements::prepare(&client).await?;
    Ok(Connection { client, statements })
}

/// A database that does not carry this data directory's label was emptied or replaced since
/// natter last wrote to it: the changes queued since then would not make it whole, so
/// everything is copied again. One that carries another natter's label is left alone unless
/// `replace_foreign`: it is most likely that natter's live copy.
async fn check_instance(
    client: &Client,
    store: &Arc<SledStore>,
    target: &str,
    replace_foreign: bool,
) -> Result<(), WorkerError> {
    let theirs: Option<String> = client
        .query_opt("SELECT id FROM mirror_instance LIMIT 1", &[])
        .await
        .map_err(PgError)?
        .map(|row| row.get(0));
    let (s, t) = (store.clone(), target.to_owned());
    tokio::task::spawn_blocking(move || {
        let ours = s.mirror_instance()?;
        if let Some(label) = theirs.as_deref()
            && ours.as_deref() != Some(label)
            && !replace_foreign
        {
            return Ok(Err(WorkerError::Foreign {
                target: t,
                label: label.to_owned(),
                ours: ours.unwrap_or_else(|| "none".into()),
            }));
        }
        // A queued reset is a full copy on its way; it labels the database when applied.
        if (theirs.is_some() && theirs == ours) || s.reset_pending()? {
            return Ok(Ok(()));
        }
        log::warn!(
            "the mirror database {t} is not the copy this data directory has been filling (it \
             was replaced, emptied or restored from elsewhere): copying everything again"
        );
        s.seed_mirror(&t).map(|_| Ok(()))
    })
    .await??
}

async fn read_batch(store: &Arc<SledStore>) -> Result<Vec<(u64, Queued)>, WorkerError> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || store.outbox_batch(BATCH)).await??)
}

/// Logs the mirror falling behind, going down and catching up, once per change of state.
#[derive(Default)]
struct LagLog {
    /// The state last logged; `None` before the first report.
    logged: Option<MirrorState>,
    since: Option<Instant>,
    last_reminder: Option<Instant>,
    applied: u64,
}

impl LagLog {
    fn applied(&mut self, n: usize) {
        self.applied += n as u64;
    }

    fn failed(
        &mut self,
        target: &str,
        error: &dyn Display,
        report: &MirrorReport,
        retry: Duration,
    ) {
        let now = Instant::now();
        if self.enter(MirrorState::Down, now) {
            log::warn!(
                "PostgreSQL mirror is down ({target}: {error}); {}; retrying in {} ms, backing \
                 off to {} s",
                lag(report),
                retry.as_millis(),
                MAX_BACKOFF.as_secs()
            );
        } else {
            log::debug!("PostgreSQL mirror still down: {error}");
        }
    }

    fn observe(&mut self, report: &MirrorReport) {
        let now = Instant::now();
        match report.state {
            MirrorState::Behind if self.enter(MirrorState::Behind, now) => {
                log::warn!("PostgreSQL mirror is behind: {}", lag(report));
            }
            MirrorState::Ok if report.outbox_len == 0 => {
                if matches!(
                    self.logged,
                    Some(MirrorState::Behind) | Some(MirrorState::Down)
                ) {
                    let took = self.since.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    log::info!(
                        "PostgreSQL mirror caught up: {} changes applied, {took:.1} s after it \
                         went down or fell behind",
                        self.applied
                    );
                }
                self.logged = Some(MirrorState::Ok);
            }
            _ => {}
        }
    }

    /// Records a trouble state; true when it should be logged (new, or due for a reminder).
    fn enter(&mut self, state: MirrorState, now: Instant) -> bool {
        let in_trouble = matches!(
            self.logged,
            Some(MirrorState::Behind) | Some(MirrorState::Down)
        );
        if !in_trouble {
            // The catch-up report counts from the first moment of trouble.
            self.since = Some(now);
            self.applied = 0;
        }
        if self.logged == Some(state) && !self.remind(now) {
            return false;
        }
        self.logged = Some(state);
        self.last_reminder = Some(now);
        true
    }

    fn remind(&self, now: Instant) -> bool {
        self.last_reminder
            .is_some_and(|t| now.duration_since(t) >= REMIND_EVERY)
    }
}

fn lag(report: &MirrorReport) -> String {
    match report.oldest_age {
        Some(age) => format!(
            "{} changes waiting, the oldest for {:.1} s",
            report.outbox_len,
            age.as_secs_f64()
        ),
        None => "no changes waiting".into(),
    }
}
