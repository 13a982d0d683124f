//! Workload 10: keepalives from many signed-in sessions.

use super::{Report, Scale, fmt_int, keepalive_row};
use crate::client::Guest;
use crate::keepalive::Keepalives;
use crate::servers::Server;
use futures_util::future::join_all;
use std::sync::Arc;

/// Workload 10: many signed-in sessions that only send keepalives, as the original clients do
/// between polls; none may fail (idle kept-alive connections must outlive the keepalive period).
pub(super) async fn many_keepalives(s: &Scale, r: &mut Report) -> Result<(), String> {
    // Unpolled default queues stay small: this workload is about connections, not events.
    let server = Server::natter("event_queue_capacity = 16", "")?;
    let n = s.keepalive_sessions;
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let logins = join_all((0..n).map(|i| {
        let gate = gate.clone();
        let addr = server.addr;
        async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            // The login connection closes here: each session keeps only its keepalive connection.
            Guest::login(addr, &format!("ka{i}"))
                .await
                .map(|g| g.cookie)
        }
    }))
    .await;
    let keepalives = Keepalives::new(server.addr);
    for cookie in logins {
        keepalives.start(cookie?);
    }
    tokio::time::sleep(s.keepalive_length).await;
    let kept = keepalives.finish().await;
    server.stop();
    keepalive_row(
        r,
        "10",
        &format!(
            "{} signed-in sessions for {} s",
            fmt_int(n as f64),
            s.keepalive_length.as_secs()
        ),
        "w10",
        &kept,
    );
    Ok(())
}
