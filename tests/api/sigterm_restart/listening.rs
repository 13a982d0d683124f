//! A listener on one explicit queue or the legacy `/poll` that records every answer with the time
//! it came, so the test can tell what the poll parked at SIGTERM got.

use super::{CHATS, END};
use crate::wire::{Session, Wire};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One answer a listener got, with when it arrived.
#[derive(Debug)]
pub enum Outcome {
    /// A 200: the message events it carried.
    Answered { at: Instant, messages: Vec<Value> },
    /// Refused or cut off (the server is stopping or down).
    Failed { at: Instant },
    /// Any other status: a lost queue or session.
    Refused { status: u16, body: String },
}

/// What one queue (or the legacy poll) saw.
pub struct Listening {
    label: String,
    outcomes: Vec<Outcome>,
}

impl Listening {
    pub fn messages(&self) -> Vec<(u64, String)> {
        let answered = self.outcomes.iter().filter_map(|o| match o {
            Outcome::Answered { messages, .. } => Some(messages),
            _ => None,
        });
        answered
            .flatten()
            .map(|m| {
                let id = m["id"].as_u64().unwrap();
                (id, m["text"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn ends_seen(&self) -> usize {
        self.messages().iter().filter(|(_, t)| t == END).count()
    }
}

/// What every listener shares with the test.
#[derive(Default)]
pub struct Progress {
    /// Message events received, summed over listeners.
    pub messages: AtomicUsize,
    pub stop: AtomicBool,
}

/// Polls one queue (`Some(queue_id)`) or the legacy `/poll` until both end markers arrive.
pub async fn listen(
    wire: Wire,
    session: Session,
    queue: Option<(String, u64)>,
    progress: Arc<Progress>,
) -> Listening {
    let label = match &queue {
        Some((id, _)) => format!("{} queue {id}", session.name),
        None => format!("{} /poll", session.name),
    };
    let mut seen = Listening {
        label,
        outcomes: Vec::new(),
    };
    let mut last = queue.as_ref().map_or(0, |(_, last)| *last);
    while seen.ends_seen() < CHATS.len() && !progress.stop.load(Ordering::Relaxed) {
        let answer = match &queue {
            Some((id, _)) => wire.events(&session, id, last).await,
            None => wire.poll(&session, last).await,
        };
        let at = Instant::now();
        let answer = match answer {
            Ok(answer) if answer.status == 200 => answer,
            Ok(answer) => {
                seen.outcomes.push(Outcome::Refused {
                    status: answer.status,
                    body: answer.text(),
                });
                break;
            }
            Err(_) => {
                // Stopping or down: try again shortly, as the web client does.
                seen.outcomes.push(Outcome::Failed { at });
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let events: Vec<Value> = match &queue {
            Some(_) => answer.json()["events"].as_array().unwrap().clone(),
            None if answer.body.is_empty() => Vec::new(),
            None => vec![answer.json()],
        };
        let mut messages = Vec::new();
        for event in events {
            let id = event["id"].as_u64().unwrap();
            assert!(
                id > last,
                "{}: event ids increase ({id} after {last})",
                seen.label
            );
            last = id;
            if event["type"] == "MessageEvent" {
                messages.push(event["event"].clone());
            }
        }
        progress
            .messages
            .fetch_add(messages.len(), Ordering::Relaxed);
        seen.outcomes.push(Outcome::Answered { at, messages });
    }
    seen
}

/// The poll parked at SIGTERM got a 200 before the process exited, nothing was refused, and the
/// messages received are exactly the stored ones, in id order.
pub fn check_listener(
    listening: &Listening,
    stored: &[(u64, String)],
    term_sent: Instant,
    exited: Instant,
) {
    let label = &listening.label;
    for outcome in &listening.outcomes {
        if let Outcome::Refused { status, body } = outcome {
            panic!("{label}: refused with {status} {body}");
        }
    }
    let first_after_term = listening.outcomes.iter().find(|o| match o {
        Outcome::Answered { at, .. } | Outcome::Failed { at } => *at >= term_sent,
        Outcome::Refused { .. } => false,
    });
    match first_after_term {
        Some(Outcome::Answered { at, .. }) => {
            assert!(
                *at <= exited,
                "{label}: the parked poll was answered before the exit"
            )
        }
        other => panic!("{label}: the parked poll was answered with a 200, not {other:?}"),
    }
    assert_eq!(
        listening.messages(),
        stored,
        "{label}: every stored message once, in order"
    );
}
