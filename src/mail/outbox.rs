//! Delivers the durable outbox in the background, retrying with backoff; no request waits on it.

use super::{Transport, render};
use crate::store::{Mail, QueuedMail, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// After this many failed attempts (about two days of retries) a mail is dropped with an error.
const MAX_ATTEMPTS: u32 = 200;
/// Longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 15 * 60;

/// Seconds to wait after the `attempts`-th failure: 1, 2, 4, … capped at 15 minutes.
pub fn backoff_secs(attempts: u32) -> i64 {
    1i64.checked_shl(attempts.saturating_sub(1))
        .unwrap_or(MAX_BACKOFF_SECS)
        .min(MAX_BACKOFF_SECS)
}

/// With several nodes, how often the sending node looks for mail the others queued, and the
/// others ask whether they send now.
const OTHER_NODES_MAIL: Duration = Duration::from_secs(5);

/// Delivers queued mail until the task is dropped; `wake` is notified when new mail is queued.
pub async fn run(
    store: Arc<dyn Store>,
    transport: Transport,
    public_url: String,
    wake: Arc<Notify>,
    several_nodes: bool,
) {
    loop {
        // One node sends (`Store::leads`); another's queued mail reaches it by this look.
        if several_nodes && !store.leads().unwrap_or(false) {
            tokio::time::sleep(OTHER_NODES_MAIL).await;
            continue;
        }
        // Armed before the scan, so mail queued during it still wakes us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next_due = match deliver_due(&*store, &transport, &public_url).await {
            Ok(next_due) => next_due,
            Err(e) => {
                // A storage outage is logged once by the store, not every 5 s here.
                if e.is_outage() {
                    log::debug!("the mail outbox cannot be read: {e}");
                } else {
                    log::error!("the mail outbox cannot be read: {e}");
                }
                Some(crate::model::now() + 5)
            }
        };
        let wait = next_due
            .map(|due| Duration::from_secs(u64::try_from(due - crate::model::now()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(3600));
        let wait = if several_nodes {
            wait.min(OTHER_NODES_MAIL)
        } else {
            wait
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Tries every mail that is due; returns when the earliest remaining one is due.
async fn deliver_due(
    store: &dyn Store,
    transport: &Transport,
    public_url: &str,
) -> Result<Option<i64>, crate::store::StoreError> {
    // The earliest attempt still ahead; i64::MAX while none is.
    let mut next_due = i64::MAX;
    for (id, mut queued) in store.pending_mail()? {
        if queued.next_attempt > crate::model::now() {
            next_due = next_due.min(queued.next_attempt);
            continue;
        }
        let rendered = render(&queued.mail, public_url);
        match transport.deliver(&queued.mail, &rendered).await {
            Ok(()) => store.delete_mail(id)?,
            Err(e) => {
                queued.attempts += 1;
                if queued.attempts >= MAX_ATTEMPTS {
                    log::error!(
                        "giving up on a mail after {} attempts: {e}",
                        queued.attempts
                    );
                    store.delete_mail(id)?;
                    continue;
                }
                queued.next_attempt = crate::model::now() + backoff_secs(queued.attempts);
                log::warn!(
                    "mail delivery failed (attempt {}), retrying in {} s: {e}",
                    queued.attempts,
                    backoff_secs(queued.attempts)
                );
                next_due = next_due.min(queued.next_attempt);
                store.reschedule_mail(id, &queued)?;
            }
        }
    }
    Ok((next_due != i64::MAX).then_some(next_due))
}

/// A mail to send as soon as possible.
pub fn queued_now(mail: Mail) -> QueuedMail {
    QueuedMail {
        mail,
        attempts: 0,
        next_attempt: crate::model::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_secs(1), 1);
        assert_eq!(backoff_secs(2), 2);
        assert_eq!(backoff_secs(5), 16);
        assert_eq!(backoff_secs(30), MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(200), MAX_BACKOFF_SECS);
    }
}
