//! Signs the soak's guests in, a few at a time and at most `logins_per_sec`: each logs in, opens
//! its queue (or stays on the legacy `/poll`), joins its chat and starts listening at once, so the
//! login storm's events (each login goes to everyone online) are drained while it lasts and no
//! queue fills up on a busy machine.

use super::ledger::Ledger;
use super::listener::{Control, Heard, Member, listen};
use super::params::Params;
use crate::wire::Wire;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Sign-ins running at once.
const AT_ONCE: usize = 16;

/// Signs in every session and starts its listener; stops at the first failure.
pub async fn sign_in(
    wire: &Wire,
    params: &Params,
    ledger: &Arc<Ledger>,
    control: &Arc<Control>,
) -> Result<Vec<(Member, JoinHandle<Heard>)>, String> {
    let started = Instant::now();
    let members: Vec<_> = futures_util::stream::iter(0..params.sessions)
        .map(|index| {
            let turn = started + Duration::from_secs_f64(index as f64 / params.logins_per_sec);
            let (wire, ledger, control) = (wire.clone(), ledger.clone(), control.clone());
            let chat = params.chat_of(index);
            let legacy = params.is_legacy(index);
            async move {
                tokio::time::sleep_until(turn).await;
                let session = wire.guest(&format!("soak{index}")).await?;
                let queue = match legacy {
                    true => None,
                    false => Some(wire.open_queue(&session).await?),
                };
                wire.join(&session, &Params::chat_name(chat)).await?;
                let member = Member {
                    session,
                    chat,
                    queue,
                };
                let listening = tokio::spawn(listen(wire, member.clone(), ledger, control));
                Ok::<_, String>((member, listening))
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    members.into_iter().collect()
}
