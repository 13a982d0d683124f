//! Group commit of the writes whose answer the service does not need (a post, a session, a
//! membership): each is queued with its epoch and returns at once, so the service's lock is
//! never held across a round trip. The writer thread sends every write queued meanwhile as one
//! transaction in one flight (BEGIN, the statements, the epoch and COMMIT, pipelined), and the
//! service waits for its epoch's durability as it does for sled's flushes.

use super::flusher::Progress;
use super::link::{Conn, Session};
use crate::store::StoreError;
use futures_util::future::{MaybeDone, maybe_done};
use std::future::Future;
use std::pin::Pin;
use tokio_postgres::types::ToSql;

/// The most writes one transaction carries.
pub(super) const MAX_GROUP: usize = 512;

/// A parameter of a queued statement, owned until the statement is sent.
pub(super) type Value = Box<dyn ToSql + Send + Sync>;

/// One statement of a queued write.
pub(super) struct Statement {
    pub(super) sql: String,
    pub(super) params: Vec<Value>,
}

impl Statement {
    pub(super) fn new(sql: impl Into<String>, params: Vec<Value>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }

    /// Runs the statement on its own (inside a caller's transaction).
    pub(super) async fn run(&self, conn: &Conn<'_>) -> Result<u64, tokio_postgres::Error> {
        conn.execute(&self.sql, &self.param_refs()).await
    }

    fn param_refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A write queued with its epoch: its statements, and the message id it used, if any.
pub(super) struct Queued {
    pub(super) epoch: u64,
    pub(super) statements: Vec<Statement>,
    pub(super) message_id: Option<u64>,
    /// With several nodes: the change's row of the shared log, and whether it ends the change.
    pub(super) log: Option<LogRow>,
}

/// A change's row of the shared log (`store::changes`): its encoded body and event count.
pub(super) struct LogRow {
    pub(super) body: Vec<u8>,
    pub(super) events: u32,
}

type Request<'a> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

/// Commits `group` (writes in epoch order) as one transaction and records the outcome: committed,
/// rolled back (never durable; memory is rebuilt), or unknown with the connection lost (settled
/// by the recovery on the next connection).
pub(super) fn commit(session: &mut Session, group: Vec<Queued>, progress: &Progress) {
    let (Some(first), Some(last)) = (group.first(), group.last()) else {
        return;
    };
    let (first, last) = (first.epoch, last.epoch);
    progress.sent(last);
    let outcome = session.run(async |conn| {
        let sent = send_group(conn, &group, last).await;
        if sent.is_err() && !conn.is_closed() {
            // Nothing of the group stays; the error is what its writers learn.
            conn.roll_back(last).await;
        }
        sent
    });
    match outcome {
        Ok(()) => progress.committed(last),
        Err(StoreError::Unavailable) => progress.interrupted(),
        Err(e) => {
            log::error!(
                "PostgreSQL store: a group of {} writes was rolled back: {e}",
                group.len()
            );
            progress.rolled_back(first, last);
        }
    }
}

/// Sends the whole group in one flight and reads the answers in order.
async fn send_group(
    conn: &Conn<'_>,
    group: &[Queued],
    last: u64,
) -> Result<(), tokio_postgres::Error> {
    // Prepared first: a request goes out when first polled only if it need not prepare.
    for statement in group.iter().flat_map(|q| &q.statements) {
        conn.statement(&statement.sql).await?;
    }
    let next_message = group
        .iter()
        .filter_map(|q| q.message_id)
        .max()
        .map(|id| {
            let next = super::id_column(id.saturating_add(1));
            format!(", next_message_id = GREATEST(next_message_id, {next})")
        })
        .unwrap_or_default();
    // A single server's group (several nodes commit in `node_tx`).
    let finish = format!(
        "UPDATE store_state SET epoch = {}{next_message} WHERE id = 1; COMMIT",
        super::id_column(last)
    );
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = group
        .iter()
        .flat_map(|q| &q.statements)
        .map(Statement::param_refs)
        .collect();
    let mut requests: Vec<MaybeDone<Request<'_>>> = Vec::with_capacity(params.len() + 2);
    requests.push(maybe_done(Box::pin(conn.batch("BEGIN"))));
    for (statement, params) in group.iter().flat_map(|q| &q.statements).zip(&params) {
        let request: Request<'_> =
            Box::pin(async move { conn.execute(&statement.sql, params).await.map(drop) });
        requests.push(maybe_done(request));
    }
    requests.push(maybe_done(Box::pin(conn.batch(&finish))));
    // Polled once each, in order: each request is on its way before any answer is awaited.
    for request in &mut requests {
        let _ = futures_util::poll!(Pin::new(request));
    }
    let mut outcome = Ok(());
    for mut request in requests {
        (&mut request).await;
        if let Some(Err(e)) = Pin::new(&mut request).take_output()
            && outcome.is_ok()
        {
            outcome = Err(e);
        }
    }
    outcome
}
