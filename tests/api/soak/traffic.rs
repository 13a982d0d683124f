//! The soak's steady traffic: posts at a fixed rate from every session in turn, and a keepalive
//! from each session every `keepalive_secs`, each request on its own task so a slow answer does
//! not hold up the schedule.

use super::ledger::Ledger;
use super::listener::Member;
use super::params::Params;
use crate::wire::{Wire, explain};
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// Requests of one kind in flight at most; the schedule waits beyond that.
const IN_FLIGHT: u32 = 256;

/// Runs `each(n)` every `period` until `until`, with at most `IN_FLIGHT` running; waits for all.
async fn steady<F, Fut>(period: Duration, until: Instant, each: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
    let mut ticker = tokio::time::interval(period);
    // Behind schedule (a busy machine): catch up, so the run keeps its planned average rate.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0;
    while Instant::now() < until {
        ticker.tick().await;
        let slot = slots.clone().acquire_owned().await.unwrap();
        let request = each(n);
        tokio::spawn(async move {
            request.await;
            drop(slot);
        });
        n += 1;
    }
    let _all_done = slots.acquire_many(IN_FLIGHT).await.unwrap();
}

/// Posts `posts_per_sec` messages until `until`, the sessions taking turns.
pub async fn post(
    wire: Wire,
    members: Arc<Vec<Member>>,
    ledger: Arc<Ledger>,
    params: Params,
    until: Instant,
) {
    let period = Duration::from_secs_f64(1.0 / params.posts_per_sec);
    steady(period, until, move |n| {
        let member = members[n as usize % members.len()].clone();
        let (wire, ledger) = (wire.clone(), ledger.clone());
        async move {
            let text = format!("{} says {n}", member.session.name);
            let body = json!({ "chat": Params::chat_name(member.chat), "text": text });
            ledger.sent();
            let path = "/api/loggedonly/postMessage";
            match wire
                .call(Some(&member.session), Method::POST, path, Some(body))
                .await
            {
                Ok(answer) if answer.status == 200 => {
                    let stored = answer.json();
                    match (stored["id"].as_u64(), stored["text"].as_str()) {
                        (Some(id), Some(t)) if t == text => ledger.posted(member.chat, id, &text),
                        _ => ledger.error(format!("post {text}: stored as {stored}")),
                    }
                }
                Ok(answer) => {
                    ledger.error(format!("post {text}: {} {}", answer.status, answer.text()))
                }
                Err(e) => ledger.error(format!("post {text}: {}", explain(&e))),
            }
        }
    })
    .await;
}

/// Sends `PUT keepalive` for each session every `keepalive_secs` until `until`.
pub async fn keep_alive(
    wire: Wire,
    members: Arc<Vec<Member>>,
    ledger: Arc<Ledger>,
    params: Params,
    until: Instant,
) {
    let period = Duration::from_secs_f64(params.keepalive_secs as f64 / members.len() as f64);
    steady(period, until, move |n| {
        let member = members[n as usize % members.len()].clone();
        let (wire, ledger) = (wire.clone(), ledger.clone());
        async move {
            ledger.sent();
            let path = "/api/loggedonly/keepalive";
            match wire
                .call(Some(&member.session), Method::PUT, path, None)
                .await
            {
                Ok(answer) if answer.status == 200 => {}
                Ok(answer) => ledger.error(format!(
                    "{} keepalive: {} {}",
                    member.session.name,
                    answer.status,
                    answer.text()
                )),
                Err(e) => ledger.error(format!(
                    "{} keepalive: {}",
                    member.session.name,
                    explain(&e)
                )),
            }
        }
    })
    .await;
}
