//! A session's listener: long-polls its queue (`/events`, or the legacy `/poll` with
//! acknowledgement), checks that its chat's messages come once each and in id order, and tallies
//! them until it has as many as were posted.

use super::ledger::{Ledger, Tally};
use super::params::Params;
use crate::wire::{Answer, Session, Wire, explain};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A signed-in member of one chat.
#[derive(Clone)]
pub struct Member {
    pub session: Session,
    pub chat: usize,
    /// The explicit queue and its starting id; `None` reads the legacy `/poll`.
    pub queue: Option<(String, u64)>,
}

/// What listeners share with the test.
pub struct Control {
    /// Per chat, what was posted: set once posting has ended, so listeners know when to stop.
    expected: OnceLock<Vec<Tally>>,
    /// Turns true with `expected`: wakes listeners parked with everything already received.
    settled: tokio::sync::watch::Sender<bool>,
    /// Give up now (the test is failing or out of time).
    pub abort: AtomicBool,
}

impl Control {
    pub fn new() -> Control {
        Control {
            expected: OnceLock::new(),
            settled: tokio::sync::watch::Sender::new(false),
            abort: AtomicBool::new(false),
        }
    }

    /// Posting has ended with these tallies per chat.
    pub fn settle(&self, expected: Vec<Tally>) {
        self.expected.set(expected).unwrap();
        self.settled.send_replace(true);
    }
}

/// What one listener received.
pub struct Heard {
    pub member: Member,
    pub tally: Tally,
}

pub async fn listen(
    wire: Wire,
    member: Member,
    ledger: Arc<Ledger>,
    control: Arc<Control>,
) -> Heard {
    let name = member.session.name.clone();
    let chat_name = Params::chat_name(member.chat);
    let mut last = member.queue.as_ref().map_or(0, |(_, last)| *last);
    let (mut tally, mut last_message) = (Tally::default(), 0u64);
    loop {
        if control.abort.load(Ordering::Relaxed) {
            break;
        }
        if let Some(expected) = control.expected.get()
            && tally.count >= expected[member.chat].count
        {
            break;
        }
        ledger.sent();
        let poll = async {
            match &member.queue {
                Some((queue_id, _)) => wire.events(&member.session, queue_id, last).await,
                None => wire.poll(&member.session, last).await,
            }
        };
        let answer = if control.expected.get().is_some() {
            poll.await
        } else {
            // Posting may end while this poll is parked: then look again whether all is here.
            let mut settled = control.settled.subscribe();
            tokio::select! {
                answer = poll => answer,
                _ = settled.wait_for(|s| *s) => continue,
            }
        };
        let answer = match answer {
            Ok(answer) if answer.status == 200 => answer,
            Ok(answer) => {
                // A lost queue or session: this listener cannot go on.
                ledger.error(format!("{name} poll: {} {}", answer.status, answer.text()));
                break;
            }
            Err(e) => {
                ledger.error(format!("{name} poll: {}", explain(&e)));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for event in events_of(&answer, member.queue.is_some()) {
            let id = event["id"].as_u64().unwrap_or(0);
            if id <= last {
                ledger.error(format!("{name}: event id {id} after {last}"));
            }
            last = id;
            if event["type"] != "MessageEvent" {
                continue;
            }
            let message = &event["event"];
            let (message_id, text) = (
                message["id"].as_u64().unwrap_or(0),
                message["text"].as_str(),
            );
            if message["chat"] != chat_name.as_str() || message_id <= last_message {
                ledger.error(format!(
                    "{name}: message {message} after message {last_message} of {chat_name}"
                ));
            }
            last_message = message_id;
            tally.add(message_id, text.unwrap_or_default());
            ledger.deliveries.fetch_add(1, Ordering::Relaxed);
        }
    }
    Heard { member, tally }
}

/// The events of one answer: an `/events` batch, or the legacy poll's single envelope.
fn events_of(answer: &Answer, batch: bool) -> Vec<Value> {
    if batch {
        let mut body = answer.json();
        return match body["events"].take() {
            Value::Array(events) => events,
            _ => Vec::new(),
        };
    }
    if answer.body.is_empty() {
        Vec::new()
    } else {
        vec![answer.json()]
    }
}
