//! The hub's tests: staging and release, queues, polls, the per-session cap, snapshots.

use super::snapshot::{QueueSnapshot, SessionSnapshot, Snapshot, decode_snapshot};
use super::snapshot_v1::{QueueSnapshotV1, SessionSnapshotV1, SnapshotV1};
use super::*;
use crate::model::Message;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const ALL: EventTypes = EventTypes::ALL;
const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

fn message(id: u64) -> Event {
    Event::Message(Message {
        user: "ann".into(),
        verified: false,
        admin: false,
        bot: false,
        chat: "general".into(),
        id,
        text: format!("text {id}"),
        time: 0,
    })
}

/// The chat message id carried by a delivered `MessageEvent`.
fn message_id(delivered: &Delivered) -> u64 {
    assert_eq!(delivered.event.kind, "MessageEvent");
    let message: Message = serde_json::from_str(delivered.event.payload.get()).unwrap();
    message.id
}

fn message_ids(batch: &[Delivered]) -> Vec<u64> {
    batch.iter().map(message_id).collect()
}

fn queue_ids(batch: &[Delivered]) -> Vec<u64> {
    batch.iter().map(|d| d.id).collect()
}

/// Limits with `capacity` and the default queues per session.
fn limits(capacity: usize) -> HubLimits {
    HubLimits {
        capacity,
        ..HubLimits::default()
    }
}

fn hub_with(capacity: usize, sessions: impl IntoIterator<Item = SessionHandle>) -> Arc<Hub> {
    let hub = Arc::new(Hub::new(limits(capacity)));
    for s in sessions {
        hub.open_session(s);
    }
    hub
}

/// Stages and releases one message at once.
fn publish(hub: &Hub, targets: &[SessionHandle], id: u64) {
    hub.stage(0, targets.iter().copied(), &message(id));
    hub.release(0);
}

/// Everything in a queue right now, without waiting.
async fn pending(hub: &Hub, s: SessionHandle, queue: &str) -> Vec<Delivered> {
    hub.poll_queue(s, queue, 0, Duration::ZERO).await.unwrap()
}

/// The session reads its default queue too (`/poll` beside `/events`), so it gets every event.
async fn reads_its_default_queue(hub: &Hub, s: SessionHandle) {
    assert!(matches!(
        hub.poll_default(s, Some(0), Duration::ZERO).await,
        PollReply::Empty
    ));
}

async fn wait_until_parked(hub: &Hub, s: SessionHandle) {
    while !hub.is_parked(s) {
        tokio::task::yield_now().await;
    }
}

async fn wait_until_parked_count(hub: &Hub, parked: usize) {
    while hub.stats().parked != parked {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn staged_events_stay_invisible_until_released() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    hub.stage(5, [1], &message(1));
    hub.release(4);
    assert!(pending(&hub, 1, &queue).await.is_empty());
    assert!(matches!(
        hub.poll_default(1, Some(0), Duration::ZERO).await,
        PollReply::Empty
    ));
    hub.release(5);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
}

#[tokio::test]
async fn a_queue_opened_after_an_event_was_staged_never_gets_it() {
    let hub = hub_with(100, [1]);
    reads_its_default_queue(&hub, 1).await;
    hub.stage(5, [1], &message(1));
    let (late, _) = hub.open_queue(1, ALL).unwrap();
    hub.release(5);
    assert!(pending(&hub, 1, &late).await.is_empty());
    // The default queue was there before: it has the event.
    let PollReply::Event(first) = hub.poll_default(1, None, Duration::ZERO).await else {
        panic!("the default queue holds the event");
    };
    assert_eq!(message_id(&first), 1);
    publish(&hub, &[1], 2);
    assert_eq!(message_ids(&pending(&hub, 1, &late).await), [2]);
}

#[tokio::test]
async fn a_session_back_online_gets_nothing_staged_before_it_went_offline() {
    let hub = hub_with(100, [1]);
    hub.stage(5, [1], &message(1));
    hub.close_session(1);
    hub.open_session(1);
    hub.release(5);
    assert!(matches!(
        hub.poll_default(1, None, Duration::ZERO).await,
        PollReply::Empty
    ));
}

#[tokio::test]
async fn release_keeps_staging_order_across_many_sessions() {
    let sessions: Vec<SessionHandle> = (1..=20).collect();
    let hub = hub_with(1000, sessions.iter().copied());
    let mut queues = Vec::new();
    for &s in &sessions {
        queues.push((s, hub.open_queue(s, ALL).unwrap().0));
    }
    // Several events per epoch, and each session gets a different subset.
    let mut expected: HashMap<SessionHandle, Vec<u64>> = HashMap::new();
    for id in 1..=60u64 {
        let targets: Vec<SessionHandle> = sessions.iter().copied().filter(|s| id % s < 3).collect();
        for &s in &targets {
            expected.entry(s).or_default().push(id);
        }
        hub.stage(id / 4 + 1, targets, &message(id));
    }
    // Repeated and lower values change nothing.
    for epoch in [3, 3, 1, 9, 2, 9, 16, 100] {
        hub.release(epoch);
    }
    for (s, queue) in &queues {
        let got = message_ids(&pending(&hub, *s, queue).await);
        assert_eq!(&got, expected.get(s).unwrap_or(&Vec::new()), "session {s}");
        let ids = queue_ids(&pending(&hub, *s, queue).await);
        assert_eq!(ids, (1..=got.len() as u64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn release_stops_at_the_first_event_not_yet_durable() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    hub.stage(1, [1], &message(1));
    hub.stage(3, [1], &message(2));
    hub.stage(2, [1], &message(3));
    hub.release(2);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
    hub.release(3);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1, 2, 3]);
}

#[tokio::test]
async fn events_of_writes_lost_in_a_storage_failure_are_never_delivered() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    hub.stage(1, [1], &message(1));
    hub.release(1);
    // Epochs 2 and 3 were committed in memory, then the disk failed before they were flushed.
    hub.stage(2, [1], &message(2));
    hub.discard_lost(2, 3);
    // A lost write whose event is staged late, then the recovery's epoch and a new write.
    hub.stage(3, [1], &message(3));
    hub.stage(5, [1], &message(5));
    hub.release(5);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1, 5]);
}

#[tokio::test]
async fn event_staged_after_its_epoch_is_durable_is_delivered_at_once() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    hub.release(7);
    hub.stage(6, [1], &message(1));
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
}

#[tokio::test]
async fn unknown_and_duplicate_targets_are_handled() {
    let hub = hub_with(100, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1, 99, 1], 1);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
    assert_eq!(hub.stats().delivered, 2);
}

#[tokio::test]
async fn default_poll_without_ack_removes_the_event() {
    let hub = hub_with(100, [1]);
    publish(&hub, &[1], 1);
    publish(&hub, &[1], 2);
    let PollReply::Event(first) = hub.poll_default(1, None, SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((first.id, message_id(&first)), (1, 1));
    let PollReply::Event(second) = hub.poll_default(1, None, SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((second.id, message_id(&second)), (2, 2));
    assert!(matches!(
        hub.poll_default(1, None, Duration::ZERO).await,
        PollReply::Empty
    ));
}

#[tokio::test]
async fn default_poll_with_ack_resends_until_acknowledged() {
    let hub = hub_with(100, [1]);
    publish(&hub, &[1], 1);
    publish(&hub, &[1], 2);
    for _ in 0..2 {
        let PollReply::Event(event) = hub.poll_default(1, Some(0), SHORT).await else {
            panic!("expected an event");
        };
        assert_eq!((event.id, message_id(&event)), (1, 1));
    }
    let PollReply::Event(event) = hub.poll_default(1, Some(1), SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((event.id, message_id(&event)), (2, 2));
    assert!(matches!(
        hub.poll_default(1, Some(2), Duration::ZERO).await,
        PollReply::Empty
    ));
}

#[tokio::test]
async fn explicit_queue_returns_batches_of_at_most_100_until_acknowledged() {
    let hub = hub_with(1000, [1]);
    let (queue, last) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(last, 0);
    for id in 1..=150 {
        publish(&hub, &[1], id);
    }
    let batch = hub.poll_queue(1, &queue, 0, SHORT).await.unwrap();
    assert_eq!(queue_ids(&batch), (1..=100).collect::<Vec<_>>());
    // Not acknowledged yet: the same batch again.
    let again = hub.poll_queue(1, &queue, 0, SHORT).await.unwrap();
    assert_eq!(queue_ids(&again), queue_ids(&batch));
    let rest = hub.poll_queue(1, &queue, 100, SHORT).await.unwrap();
    assert_eq!(message_ids(&rest), (101..=150).collect::<Vec<_>>());
    assert!(
        hub.poll_queue(1, &queue, 150, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn every_queue_of_a_session_gets_every_event() {
    let hub = hub_with(100, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (a, _) = hub.open_queue(1, ALL).unwrap();
    let (b, _) = hub.open_queue(1, ALL).unwrap();
    assert_ne!(a, b);
    publish(&hub, &[1], 1);
    publish(&hub, &[1], 2);
    assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1, 2]);
    assert_eq!(message_ids(&pending(&hub, 1, &b).await), [1, 2]);
    assert!(matches!(
        hub.poll_default(1, Some(1), Duration::ZERO).await,
        PollReply::Event(Delivered { id: 2, .. })
    ));
    // One encoding shared by all queues.
    let first_a = &pending(&hub, 1, &a).await[0];
    let first_b = &pending(&hub, 1, &b).await[0];
    assert!(Arc::ptr_eq(&first_a.event, &first_b.event));
}

#[tokio::test]
async fn parked_poll_wakes_when_an_event_is_released() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    assert!(hub.is_parked(1));
    hub.stage(1, [1], &message(7));
    hub.release(1);
    let batch = poll.await.unwrap().unwrap();
    assert_eq!(message_ids(&batch), [7]);
    assert!(started.elapsed() < LONG / 5);
    assert!(!hub.is_parked(1));
}

#[tokio::test]
async fn parked_default_poll_wakes_when_an_event_is_released() {
    let hub = hub_with(100, [1]);
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_default(1, None, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    publish(&hub, &[1], 3);
    let PollReply::Event(event) = poll.await.unwrap() else {
        panic!("expected an event");
    };
    assert_eq!(message_id(&event), 3);
}

#[tokio::test]
async fn poll_times_out_empty() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    assert!(
        hub.poll_queue(1, &queue, 0, SHORT)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        hub.poll_default(1, None, SHORT).await,
        PollReply::Empty
    ));
    assert!(started.elapsed() >= 2 * SHORT);
    assert!(!hub.is_parked(1));
}

#[tokio::test]
async fn newest_parked_poll_wins() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let spawn_poll = |hub: &Arc<Hub>| {
        let (hub, queue) = (Arc::clone(hub), queue.clone());
        tokio::spawn(async move { hub.poll_queue(1, &queue, 0, LONG).await })
    };
    let started = Instant::now();
    let older = spawn_poll(&hub);
    wait_until_parked(&hub, 1).await;
    let newer = spawn_poll(&hub);
    assert!(older.await.unwrap().unwrap().is_empty());
    assert!(started.elapsed() < LONG / 5);
    assert_eq!(hub.stats().parked, 1);
    publish(&hub, &[1], 1);
    assert_eq!(message_ids(&newer.await.unwrap().unwrap()), [1]);
}

#[tokio::test]
async fn overflowed_explicit_queue_is_bad_and_deleted() {
    let hub = hub_with(3, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    for id in 1..=3 {
        publish(&hub, &[1], id);
    }
    assert_eq!(pending(&hub, 1, &queue).await.len(), 3);
    publish(&hub, &[1], 4);
    // Default and explicit queue both overflowed.
    assert_eq!(hub.stats().overflowed, 2);
    assert_eq!(
        hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    assert_eq!(
        hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    assert_eq!(hub.stats().queues, 1);
}

#[tokio::test]
async fn acknowledged_events_do_not_count_towards_capacity() {
    let hub = hub_with(3, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    for id in 1..=3 {
        publish(&hub, &[1], id);
    }
    assert!(
        hub.poll_queue(1, &queue, 3, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    publish(&hub, &[1], 4);
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [4]);
    assert_eq!(queue_ids(&pending(&hub, 1, &queue).await), [4]);
}

#[tokio::test]
async fn overflowed_default_queue_resyncs_then_carries_on() {
    let hub = hub_with(3, [1]);
    for id in 1..=4 {
        publish(&hub, &[1], id);
    }
    assert_eq!(hub.stats().overflowed, 1);
    let PollReply::Event(resync) = hub.poll_default(1, Some(0), SHORT).await else {
        panic!("expected a ResyncEvent");
    };
    assert_eq!(resync.id, 4);
    assert_eq!(resync.event.kind, "ResyncEvent");
    assert_eq!(
        resync.event.payload.get(),
        r#"{"reason":"event queue overflowed"}"#
    );
    publish(&hub, &[1], 5);
    let PollReply::Event(next) = hub.poll_default(1, Some(4), SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((next.id, message_id(&next)), (5, 5));
}

#[tokio::test]
async fn another_sessions_queue_id_is_bad() {
    let hub = hub_with(100, [1, 2]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(
        hub.poll_queue(2, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    assert_eq!(
        hub.poll_queue(1, "no-such-queue", 0, SHORT)
            .await
            .unwrap_err(),
        BadQueue
    );
    assert!(hub.open_queue(3, ALL).is_none());
    assert!(matches!(
        hub.poll_default(3, None, LONG).await,
        PollReply::Empty
    ));
}

#[tokio::test]
async fn queue_ids_are_random_base64url() {
    let hub = hub_with(100, [1]);
    let (a, _) = hub.open_queue(1, ALL).unwrap();
    let (b, _) = hub.open_queue(1, ALL).unwrap();
    assert_ne!(a, b);
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
}

#[tokio::test]
async fn closing_a_session_wakes_its_parked_polls() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    let explicit = tokio::spawn({
        let (hub, queue) = (Arc::clone(&hub), queue.clone());
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    let default = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_default(1, None, LONG).await }
    });
    wait_until_parked_count(&hub, 2).await;
    hub.close_session(1);
    assert!(explicit.await.unwrap().unwrap().is_empty());
    assert!(matches!(default.await.unwrap(), PollReply::Empty));
    assert!(started.elapsed() < LONG / 5);
    assert!(!hub.has_session(1));
    assert_eq!(
        hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    assert_eq!(hub.stats().queues, 0);
}

#[tokio::test]
async fn shutdown_wakes_parked_polls_and_later_polls_return_at_once() {
    let hub = hub_with(100, [1, 2]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    let explicit = tokio::spawn({
        let (hub, queue) = (Arc::clone(&hub), queue.clone());
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    let default = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_default(2, None, LONG).await }
    });
    wait_until_parked_count(&hub, 2).await;
    hub.shutdown();
    assert!(explicit.await.unwrap().unwrap().is_empty());
    assert!(matches!(default.await.unwrap(), PollReply::Empty));
    assert!(hub.poll_queue(1, &queue, 0, LONG).await.unwrap().is_empty());
    assert!(matches!(
        hub.poll_default(2, None, LONG).await,
        PollReply::Empty
    ));
    assert!(started.elapsed() < LONG / 5);
}

#[tokio::test]
async fn idle_expiry_spares_default_queues_and_parked_polls() {
    let hub = hub_with(100, [1]);
    let (idle, _) = hub.open_queue(1, ALL).unwrap();
    let (busy, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(hub.expire_idle_queues(Duration::from_secs(60)), 0);
    let poll = tokio::spawn({
        let (hub, busy) = (Arc::clone(&hub), busy.clone());
        async move { hub.poll_queue(1, &busy, 0, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    assert_eq!(hub.expire_idle_queues(Duration::ZERO), 1);
    assert_eq!(hub.stats().queues, 2);
    assert_eq!(
        hub.poll_queue(1, &idle, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    publish(&hub, &[1], 1);
    assert_eq!(message_ids(&poll.await.unwrap().unwrap()), [1]);
    assert_eq!(message_ids(&pending(&hub, 1, &busy).await), [1]);
}

#[tokio::test]
async fn cancelled_poll_is_no_longer_parked() {
    let hub = hub_with(100, [1]);
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_default(1, None, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    poll.abort();
    assert!(poll.await.unwrap_err().is_cancelled());
    assert!(!hub.is_parked(1));
    // The wake-up target is gone, so delivery still just queues.
    publish(&hub, &[1], 1);
    assert!(matches!(
        hub.poll_default(1, None, SHORT).await,
        PollReply::Event(Delivered { id: 1, .. })
    ));
}

#[tokio::test]
async fn snapshot_restores_ids_and_undelivered_events_for_kept_sessions() {
    let hub = hub_with(100, [1, 2, 3]);
    reads_its_default_queue(&hub, 1).await;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    for id in 1..=3 {
        publish(&hub, &[1, 2, 3], id);
    }
    // Acknowledge one on each of session 1's queues.
    hub.poll_queue(1, &queue, 1, Duration::ZERO).await.unwrap();
    hub.poll_default(1, None, Duration::ZERO).await;
    let bytes = hub.snapshot();

    let restored = Hub::new(limits(100));
    assert_eq!(restored.restore(&bytes, |s| s != 3), Ok(3));
    assert!(restored.has_session(1) && restored.has_session(2));
    assert!(!restored.has_session(3));
    assert_eq!(
        queue_ids(&pending(&restored, 1, &queue).await),
        [2, 3],
        "explicit queue keeps its ids"
    );
    assert_eq!(message_ids(&pending(&restored, 1, &queue).await), [2, 3]);
    assert!(matches!(
        restored.poll_default(1, Some(0), SHORT).await,
        PollReply::Event(Delivered { id: 2, .. })
    ));
    // New events continue the ids, and restored copies of one event share memory.
    publish(&restored, &[1, 2], 4);
    let batch = pending(&restored, 1, &queue).await;
    assert_eq!(queue_ids(&batch), [2, 3, 4]);
    assert_eq!(message_ids(&batch), [2, 3, 4]);
    let PollReply::Event(first) = restored.poll_default(2, Some(0), SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((first.id, message_id(&first)), (1, 1));
    assert!(Arc::ptr_eq(&batch[0].event, &{
        let PollReply::Event(second) = restored.poll_default(2, Some(1), SHORT).await else {
            panic!("expected an event");
        };
        second.event
    }));
}

#[tokio::test]
async fn snapshot_keeps_lost_explicit_queues_lost() {
    let hub = hub_with(1, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1], 1);
    publish(&hub, &[1], 2);
    let restored = Hub::new(limits(1));
    assert_eq!(restored.restore(&hub.snapshot(), |_| true), Ok(2));
    assert_eq!(
        restored.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
}

#[test]
fn bad_snapshots_are_errors() {
    let hub = hub_with(100, [1]);
    hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1], 1);
    let bytes = hub.snapshot();
    let fresh = Hub::new(limits(100));
    assert!(fresh.restore(&[], |_| true).is_err());
    assert!(fresh.restore(&[SNAPSHOT_VERSION + 1], |_| true).is_err());
    assert!(fresh.restore(&bytes[..bytes.len() - 1], |_| true).is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(fresh.restore(&trailing, |_| true).is_err());
    assert!(
        fresh
            .restore(&[SNAPSHOT_VERSION, 0xff, 0xff, 0xff], |_| true)
            .is_err()
    );
    assert_eq!(fresh.stats().sessions, 0);
    assert_eq!(fresh.restore(&bytes, |_| true), Ok(2));
}

/// A snapshot's bytes: its version, then the bincode body.
fn snapshot_bytes(version: u8, body: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend(bincode::serde::encode_to_vec(body, bincode::config::standard()).unwrap());
    bytes
}

fn v1_queue(next_id: u64, ids: &[u64]) -> QueueSnapshotV1 {
    let entry = |id: u64| {
        let event = message(id).encode();
        (id, event.kind, event.payload.get().to_owned())
    };
    QueueSnapshotV1 {
        next_id,
        lost: false,
        events: ids.iter().map(|id| entry(*id)).collect(),
    }
}

#[test]
fn version_1_snapshot_with_out_of_order_ids_is_an_error() {
    let v1 = |queue| SnapshotV1 {
        sessions: vec![SessionSnapshotV1 {
            session: 1,
            default: queue,
            explicit: Vec::new(),
        }],
    };
    let hub = Hub::new(limits(100));
    assert!(
        hub.restore(&snapshot_bytes(1, &v1(v1_queue(3, &[2, 1]))), |_| true)
            .is_err()
    );
    assert!(
        hub.restore(&snapshot_bytes(1, &v1(v1_queue(2, &[1, 2]))), |_| true)
            .is_err()
    );
    assert_eq!(
        hub.restore(&snapshot_bytes(1, &v1(v1_queue(3, &[1, 2]))), |_| true),
        Ok(1)
    );
}

#[test]
fn snapshot_with_more_events_than_ids_or_a_missing_event_is_an_error() {
    let with_queue = |next_id, events: Vec<u64>| Snapshot {
        events: vec![("MessageEvent".into(), "{}".into())],
        sessions: vec![SessionSnapshot {
            session: 1,
            default_polled: true,
            default: QueueSnapshot {
                next_id,
                lost: false,
                events,
                event_types: None,
            },
            explicit: Vec::new(),
        }],
    };
    let hub = Hub::new(limits(100));
    let restore =
        |snapshot: &Snapshot| hub.restore(&snapshot_bytes(SNAPSHOT_VERSION, snapshot), |_| true);
    assert!(
        restore(&with_queue(2, vec![0, 0])).is_err(),
        "two events, one id"
    );
    assert!(restore(&with_queue(0, vec![])).is_err(), "id 0");
    assert!(restore(&with_queue(5, vec![0, 1])).is_err(), "no event 1");
    assert_eq!(restore(&with_queue(5, vec![0, 0])), Ok(1));
}

#[tokio::test]
async fn a_snapshot_stores_each_event_once_however_many_queues_hold_it() {
    let sessions: Vec<SessionHandle> = (1..=50).collect();
    let hub = hub_with(1000, sessions.iter().copied());
    for s in &sessions {
        reads_its_default_queue(&hub, *s).await;
        hub.open_queue(*s, ALL).unwrap();
    }
    let text = "x".repeat(500);
    for id in 1..=200 {
        let event = Event::Message(Message {
            text: text.clone(),
            ..match message(id) {
                Event::Message(m) => m,
                _ => unreachable!(),
            }
        });
        hub.stage(0, sessions.iter().copied(), &event);
        hub.release(0);
    }
    let bytes = hub.snapshot();
    // 200 events of ~600 bytes once, plus a few bytes per queue entry (100 queues × 200).
    assert!(
        bytes.len() < 200 * 600 + 100 * 200 * 3,
        "{} bytes",
        bytes.len()
    );
    let restored = Hub::new(limits(1000));
    assert_eq!(restored.restore(&bytes, |_| true), Ok(100));
    let PollReply::Event(a) = restored.poll_default(1, Some(0), SHORT).await else {
        panic!("restored events");
    };
    let PollReply::Event(b) = restored.poll_default(50, Some(0), SHORT).await else {
        panic!("restored events");
    };
    assert_eq!((a.id, message_id(&a)), (1, 1));
    assert!(
        Arc::ptr_eq(&a.event, &b.event),
        "restored queues share each event"
    );
}

#[tokio::test]
async fn stats_count_sessions_queues_and_deliveries() {
    let hub = hub_with(100, [1, 2]);
    reads_its_default_queue(&hub, 1).await;
    hub.open_session(1);
    hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1, 2], 1);
    assert_eq!(
        hub.stats(),
        HubStats {
            sessions: 2,
            queues: 3,
            explicit_queues: 1,
            buffered: 3,
            parked: 0,
            delivered: 3,
            overflowed: 0,
            evicted: 0,
        }
    );
}

/// A hub whose sessions may open `cap` explicit queues.
fn capped_hub(
    capacity: usize,
    cap: usize,
    sessions: impl IntoIterator<Item = SessionHandle>,
) -> Arc<Hub> {
    let hub = Arc::new(Hub::new(HubLimits {
        capacity,
        queues_per_session: cap,
    }));
    for s in sessions {
        hub.open_session(s);
    }
    hub
}

/// Which of `queues` still answer a poll.
async fn alive(hub: &Hub, s: SessionHandle, queues: &[&str]) -> Vec<bool> {
    let mut alive = Vec::new();
    for queue in queues {
        alive.push(hub.poll_queue(s, queue, 0, Duration::ZERO).await.is_ok());
    }
    alive
}

#[tokio::test]
async fn opening_one_queue_too_many_drops_the_least_recently_polled() {
    let hub = capped_hub(100, 3, [1, 2]);
    let (a, _) = hub.open_queue(1, ALL).unwrap();
    let (b, _) = hub.open_queue(1, ALL).unwrap();
    let (c, _) = hub.open_queue(1, ALL).unwrap();
    // Another session's queues neither count nor get dropped.
    let (other, _) = hub.open_queue(2, ALL).unwrap();
    publish(&hub, &[1], 1);
    // Polled order: b (never, so when opened), a, c.
    assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1]);
    assert_eq!(message_ids(&pending(&hub, 1, &c).await), [1]);
    let (d, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(hub.stats().explicit_queues, 4);
    assert_eq!(hub.stats().evicted, 1);
    assert_eq!(hub.poll_queue(1, &b, 0, SHORT).await.unwrap_err(), BadQueue);
    assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1]);
    assert!(pending(&hub, 1, &d).await.is_empty());
    // Now c is the one polled longest ago.
    let (e, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(
        alive(&hub, 1, &[&a, &b, &c, &d, &e]).await,
        [true, false, false, true, true]
    );
    assert_eq!(alive(&hub, 2, &[&other]).await, [true]);
    publish(&hub, &[1], 2);
    assert_eq!(message_ids(&pending(&hub, 1, &a).await), [1, 2]);
    assert_eq!(message_ids(&pending(&hub, 1, &e).await), [2]);
    assert_eq!(hub.stats().explicit_queues, 4);
}

#[tokio::test]
async fn the_default_queue_is_never_dropped_for_the_cap() {
    let hub = capped_hub(100, 1, [1]);
    publish(&hub, &[1], 1);
    for _ in 0..5 {
        hub.open_queue(1, ALL).unwrap();
    }
    assert_eq!(hub.stats().queues, 2);
    assert_eq!(hub.stats().evicted, 4);
    let PollReply::Event(event) = hub.poll_default(1, None, SHORT).await else {
        panic!("the default queue kept its event");
    };
    assert_eq!((event.id, message_id(&event)), (1, 1));
}

#[tokio::test]
async fn a_poll_parked_on_a_dropped_queue_returns_bad_queue() {
    let hub = capped_hub(100, 1, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    let poll = tokio::spawn({
        let (hub, queue) = (Arc::clone(&hub), queue.clone());
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    let (newer, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(poll.await.unwrap().unwrap_err(), BadQueue);
    assert!(started.elapsed() < LONG / 5);
    assert_eq!(hub.stats().parked, 0);
    assert_eq!(
        hub.poll_queue(1, &queue, 0, SHORT).await.unwrap_err(),
        BadQueue
    );
    publish(&hub, &[1], 1);
    assert_eq!(message_ids(&pending(&hub, 1, &newer).await), [1]);
}

/// Whether a session still has an explicit queue, without polling (which counts as use).
fn has_queue(hub: &Hub, s: SessionHandle, queue: &str) -> bool {
    hub.lock().sessions[&s].explicit.contains_key(queue)
}

#[tokio::test]
async fn lost_queues_go_first_and_queues_with_a_parked_poll_last() {
    let hub = capped_hub(2, 3, [1]);
    let (parked, _) = hub.open_queue(1, ALL).unwrap();
    let (idle, _) = hub.open_queue(1, ALL).unwrap();
    let (lost, _) = hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1], 1);
    publish(&hub, &[1], 2);
    // `parked` and `idle` acknowledge both; `lost` is polled last but keeps them, then overflows.
    for queue in [&parked, &idle] {
        hub.poll_queue(1, queue, 2, Duration::ZERO).await.unwrap();
    }
    assert_eq!(pending(&hub, 1, &lost).await.len(), 2);
    publish(&hub, &[1], 3);
    assert!(hub.lock().sessions[&1].explicit[&lost].lost);
    let poll = tokio::spawn({
        let (hub, parked) = (Arc::clone(&hub), parked.clone());
        async move { hub.poll_queue(1, &parked, 3, LONG).await }
    });
    wait_until_parked_count(&hub, 1).await;
    // Polled longest ago: idle, lost, parked. The lost one goes all the same.
    let (newer, _) = hub.open_queue(1, ALL).unwrap();
    assert!(!has_queue(&hub, 1, &lost));
    assert!(has_queue(&hub, 1, &idle));
    // Next the idle one, then `newer`: the parked poll began before `newer` was opened, but
    // a queue with a parked poll is being polled right now.
    hub.open_queue(1, ALL).unwrap();
    assert!(!has_queue(&hub, 1, &idle));
    hub.open_queue(1, ALL).unwrap();
    assert!(!has_queue(&hub, 1, &newer));
    assert!(has_queue(&hub, 1, &parked));
    assert_eq!((hub.stats().parked, hub.stats().evicted), (1, 3));
    publish(&hub, &[1], 4);
    assert_eq!(message_ids(&poll.await.unwrap().unwrap()), [4]);
}

#[tokio::test]
async fn an_overflowed_queue_frees_its_buffer() {
    let hub = hub_with(100, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    for id in 1..=100 {
        publish(&hub, &[1], id);
    }
    let held = pending(&hub, 1, &queue).await.remove(0);
    // Our copy, the default queue's and the explicit queue's.
    assert_eq!(Arc::strong_count(&held.event), 3);
    publish(&hub, &[1], 101);
    assert_eq!(hub.stats().overflowed, 2);
    assert_eq!(Arc::strong_count(&held.event), 1);
    // The default queue holds just its ResyncEvent, the lost queue nothing at all.
    assert_eq!(hub.stats().buffered, 1);
    let inner = hub.lock();
    let queues = &inner.sessions[&1];
    assert!(queues.explicit[&queue].lost);
    assert_eq!(queues.explicit[&queue].events.capacity(), 0);
    assert!(queues.default.events.capacity() < 100);
}

#[tokio::test]
async fn dropped_and_expired_queues_release_their_events() {
    let hub = capped_hub(100, 1, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (first, _) = hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1], 1);
    let held = pending(&hub, 1, &first).await.remove(0);
    assert_eq!(Arc::strong_count(&held.event), 3);
    let (second, _) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(Arc::strong_count(&held.event), 2, "dropped for the cap");
    publish(&hub, &[1], 2);
    let held = pending(&hub, 1, &second).await.remove(0);
    assert_eq!(Arc::strong_count(&held.event), 3);
    assert_eq!(hub.expire_idle_queues(Duration::ZERO), 1);
    assert_eq!(Arc::strong_count(&held.event), 2, "expired");
    assert_eq!(hub.stats().buffered, 2);
}

#[tokio::test]
async fn restore_under_a_lower_cap_keeps_the_most_recently_polled_queues() {
    let hub = capped_hub(100, 4, [1]);
    let mut queues = Vec::new();
    for _ in 0..4 {
        queues.push(hub.open_queue(1, ALL).unwrap().0);
    }
    let [a, b, c, d] = [&queues[0], &queues[1], &queues[2], &queues[3]];
    publish(&hub, &[1], 1);
    // Polled order: b, d, c, a.
    pending(&hub, 1, c).await;
    pending(&hub, 1, a).await;
    let bytes = hub.snapshot();

    let restored = Hub::new(HubLimits {
        capacity: 100,
        queues_per_session: 2,
    });
    assert_eq!(restored.restore(&bytes, |_| true), Ok(3));
    assert_eq!(
        alive(&restored, 1, &[a, b, c, d]).await,
        [true, false, true, false]
    );
    assert_eq!(message_ids(&pending(&restored, 1, a).await), [1]);
    // The order survives the restart: c was polled before a.
    let (e, _) = restored.open_queue(1, ALL).unwrap();
    assert_eq!(alive(&restored, 1, &[a, c, &e]).await, [true, false, true]);

    // Under the same cap every queue comes back.
    let same = Hub::new(HubLimits {
        capacity: 100,
        queues_per_session: 4,
    });
    assert_eq!(same.restore(&bytes, |_| true), Ok(5));
    assert_eq!(
        alive(&same, 1, &[a, b, c, d]).await,
        [true, true, true, true]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_racing_a_producer_gets_every_event_in_order() {
    const COUNT: u64 = 2000;
    let hub = hub_with(COUNT as usize, [1]);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    let started = Instant::now();
    let consumer = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move {
            let (mut ack, mut seen) = (0, Vec::new());
            while ack < COUNT {
                let batch = hub.poll_queue(1, &queue, ack, LONG).await.unwrap();
                assert!(!batch.is_empty(), "a wake-up was lost");
                ack = batch.last().map_or(ack, |d| d.id);
                seen.extend(message_ids(&batch));
            }
            seen
        }
    });
    for id in 1..=COUNT {
        hub.stage(id, [1], &message(id));
        hub.release(id);
        if id % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(consumer.await.unwrap(), (1..=COUNT).collect::<Vec<_>>());
    assert!(started.elapsed() < LONG);
}

#[test]
fn polls_can_run_on_a_multi_threaded_server() {
    fn assert_send<T: Send>(_: T) {}
    let hub = Hub::new(limits(1));
    assert_send(hub.poll_queue(1, "q", 0, SHORT));
    assert_send(hub.poll_default(1, None, SHORT));
}

#[tokio::test]
async fn explicit_only_events_skip_the_default_queue() {
    let hub = hub_with(10, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    publish(&hub, &[1], 1);
    let deleted = Event::MessageDeleted(crate::events::MessageDeletedEvent {
        chat: "general".into(),
        id: 1,
    });
    hub.stage(0, [1], &deleted);
    hub.release(0);
    publish(&hub, &[1], 2);
    let kinds: Vec<String> = pending(&hub, 1, &queue)
        .await
        .iter()
        .map(|d| d.event.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        ["MessageEvent", "MessageDeletedEvent", "MessageEvent"]
    );
    let mut legacy = Vec::new();
    while let PollReply::Event(d) = hub.poll_default(1, None, Duration::ZERO).await {
        legacy.push(message_id(&d));
    }
    assert_eq!(legacy, [1, 2], "the legacy poll never sees it");
}

/// A hub whose woken `/events` polls wait `delay`, with session 1 and its explicit queue.
fn batching_hub(delay: Duration) -> (Arc<Hub>, String) {
    let hub = Arc::new(Hub::new(limits(100)).with_batch_delay(delay));
    hub.open_session(1);
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    (hub, queue)
}

#[tokio::test]
async fn a_woken_events_poll_waits_the_batch_delay_so_later_events_share_its_answer() {
    let delay = Duration::from_millis(300);
    let (hub, queue) = batching_hub(delay);
    let started = Instant::now();
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    publish(&hub, &[1], 1);
    tokio::time::sleep(delay / 10).await;
    publish(&hub, &[1], 2);
    let batch = poll.await.unwrap().unwrap();
    assert_eq!(message_ids(&batch), [1, 2]);
    assert!(started.elapsed() >= delay, "answered once the delay passed");
}

#[tokio::test]
async fn the_batch_delay_spares_legacy_polls_and_polls_that_find_events_waiting() {
    let delay = Duration::from_secs(3);
    let (hub, queue) = batching_hub(delay);
    let started = Instant::now();
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.poll_default(1, None, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    publish(&hub, &[1], 1);
    assert!(matches!(poll.await.unwrap(), PollReply::Event(_)));
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await), [1]);
    assert!(started.elapsed() < delay);
}

/// The reason a delivered `ResyncEvent` carries.
fn resync_reason(delivered: &Delivered) -> String {
    assert_eq!(delivered.event.kind, "ResyncEvent");
    let resync: serde_json::Value = serde_json::from_str(delivered.event.payload.get()).unwrap();
    resync["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_default_queue_nobody_polls_holds_one_resync_while_explicit_queues_are_read() {
    let hub = hub_with(100, [1]);
    // Before the tab opens its queue the default queue keeps what arrives (a `/poll` may come).
    publish(&hub, &[1], 1);
    let early = hub.lock().sessions[&1].default.front().unwrap().event;
    let (queue, _) = hub.open_queue(1, ALL).unwrap();
    for id in 2..=60 {
        publish(&hub, &[1], id);
    }
    assert_eq!(message_ids(&pending(&hub, 1, &queue).await).len(), 59);
    let stats = hub.stats();
    assert_eq!(stats.buffered, 59 + 1, "the default queue holds one event");
    assert_eq!(
        stats.overflowed, 0,
        "nobody was reading it: not an overflow"
    );
    assert_eq!(Arc::strong_count(&early), 1, "the early event is freed");
    // A late `/poll` learns it must refetch, then gets every later event.
    let PollReply::Event(first) = hub.poll_default(1, Some(0), Duration::ZERO).await else {
        panic!("the default queue holds a ResyncEvent");
    };
    assert_eq!(resync_reason(&first), UNREAD_REASON);
    assert!(first.id > 1, "ids go on increasing");
    publish(&hub, &[1], 61);
    let PollReply::Event(next) = hub.poll_default(1, Some(first.id), Duration::ZERO).await else {
        panic!("a polled default queue gets every event");
    };
    assert_eq!((next.id, message_id(&next)), (first.id + 1, 61));
}

#[tokio::test]
async fn a_session_without_explicit_queues_keeps_every_event_for_its_first_poll() {
    let hub = hub_with(100, [1]);
    for id in 1..=5 {
        publish(&hub, &[1], id);
    }
    let mut legacy = Vec::new();
    while let PollReply::Event(d) = hub.poll_default(1, None, Duration::ZERO).await {
        legacy.push(message_id(&d));
    }
    assert_eq!(legacy, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_snapshot_keeps_whether_the_default_queue_was_ever_polled() {
    let hub = hub_with(100, [1, 2]);
    hub.open_queue(1, ALL).unwrap();
    hub.open_queue(2, ALL).unwrap();
    reads_its_default_queue(&hub, 2).await;
    let restored = Hub::new(limits(100));
    assert_eq!(restored.restore(&hub.snapshot(), |_| true), Ok(4));
    for id in 1..=3 {
        publish(&restored, &[1, 2], id);
    }
    let default_len = |s| restored.lock().sessions[&s].default.events.len();
    assert_eq!(default_len(1), 1, "still unread: a ResyncEvent only");
    assert_eq!(default_len(2), 3, "polled before the restart: every event");
}

#[tokio::test]
async fn a_version_1_snapshot_counts_default_queues_as_polled() {
    let v1 = SnapshotV1 {
        sessions: vec![SessionSnapshotV1 {
            session: 1,
            default: v1_queue(3, &[1, 2]),
            explicit: vec![("q".into(), v1_queue(1, &[]))],
        }],
    };
    let hub = Hub::new(limits(100));
    assert_eq!(hub.restore(&snapshot_bytes(1, &v1), |_| true), Ok(2));
    publish(&hub, &[1], 3);
    publish(&hub, &[1], 4);
    let mut legacy = Vec::new();
    while let PollReply::Event(d) = hub.poll_default(1, None, Duration::ZERO).await {
        legacy.push((d.id, message_id(&d)));
    }
    assert_eq!(legacy, [(1, 1), (2, 2), (3, 3), (4, 4)]);
}

/// Prints what a shutdown's snapshot costs with full queues:
/// `cargo test --release --lib snapshot_of_full_queues -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run it in release"]
fn snapshot_of_full_queues_size_and_time() {
    let (sessions, events) = (1000, 4000);
    let hub = Hub::new(limits(4096));
    for s in 1..=sessions {
        hub.open_session(s);
    }
    for id in 1..=events {
        hub.stage(0, 1..=sessions, &message(id));
        hub.release(0);
    }
    let started = std::time::Instant::now();
    let bytes = hub.snapshot();
    let written = started.elapsed();
    let restored = Hub::new(limits(4096));
    let started = std::time::Instant::now();
    assert_eq!(restored.restore(&bytes, |_| true), Ok(sessions as usize));
    println!(
        "snapshot of {sessions} sessions holding the same {events} events: {} bytes in {written:?}, \
         restored in {:?}",
        bytes.len(),
        started.elapsed()
    );
    assert_eq!(restored.stats().buffered, (sessions * events) as usize);
}

/// A `LoginEvent` for `user`.
fn login(user: &str) -> Event {
    Event::Login(crate::events::PresenceEvent {
        user: user.into(),
        chat: String::new(),
        time: 0,
    })
}

fn only(names: &[&str]) -> EventTypes {
    EventTypes::from_names(names.iter().copied()).unwrap()
}

#[tokio::test]
async fn a_queue_gets_only_the_event_types_it_asked_for() {
    let hub = hub_with(100, [1]);
    reads_its_default_queue(&hub, 1).await;
    let (messages, _) = hub.open_queue(1, only(&["MessageEvent"])).unwrap();
    let (everything, _) = hub.open_queue(1, ALL).unwrap();
    hub.stage(0, [1], &login("ann"));
    hub.stage(0, [1], &message(1));
    hub.release(0);
    let batch = pending(&hub, 1, &messages).await;
    assert_eq!(message_ids(&batch), [1]);
    // Ids count what the queue holds: the filtered event took no id either.
    assert_eq!(queue_ids(&batch), [1]);
    let kinds: Vec<String> = pending(&hub, 1, &everything)
        .await
        .iter()
        .map(|d| d.event.kind.clone())
        .collect();
    assert_eq!(kinds, ["LoginEvent", "MessageEvent"]);
    // The default queue (the legacy `/poll`) keeps every type.
    let PollReply::Event(first) = hub.poll_default(1, None, Duration::ZERO).await else {
        panic!("the default queue holds the login");
    };
    assert_eq!(first.event.kind, "LoginEvent");
}

#[tokio::test]
async fn a_filtered_event_neither_wakes_a_poll_nor_takes_queue_space() {
    let hub = hub_with(2, [1]);
    let (queue, _) = hub.open_queue(1, only(&["MessageEvent"])).unwrap();
    let poll = tokio::spawn({
        let hub = Arc::clone(&hub);
        let queue = queue.clone();
        async move { hub.poll_queue(1, &queue, 0, LONG).await }
    });
    wait_until_parked(&hub, 1).await;
    for _ in 0..10 {
        hub.stage(0, [1], &login("ann"));
    }
    hub.release(0);
    tokio::time::sleep(SHORT).await;
    assert!(
        !poll.is_finished(),
        "a login woke a queue that does not take logins"
    );
    publish(&hub, &[1], 7);
    let batch = poll.await.unwrap().unwrap();
    assert_eq!(message_ids(&batch), [7]);
    assert_eq!(hub.stats().overflowed, 0);
}

#[tokio::test]
async fn a_filtered_queue_still_gets_its_resync_and_keeps_its_types_across_a_snapshot() {
    let hub = hub_with(100, [1]);
    let (queue, _) = hub.open_queue(1, only(&["MessageEvent"])).unwrap();
    let resync = Event::Resync(ResyncEvent {
        reason: "test".into(),
    });
    hub.stage(0, [1], &resync);
    hub.release(0);
    assert_eq!(pending(&hub, 1, &queue).await[0].event.kind, "ResyncEvent");
    let restored = Hub::new(limits(100));
    assert_eq!(restored.restore(&hub.snapshot(), |_| true), Ok(2));
    restored.stage(0, [1], &login("ann"));
    restored.stage(0, [1], &message(2));
    restored.release(0);
    let kinds: Vec<String> = pending(&restored, 1, &queue)
        .await
        .iter()
        .map(|d| d.event.kind.clone())
        .collect();
    assert_eq!(kinds, ["ResyncEvent", "MessageEvent"]);
}

#[test]
fn event_type_names_are_checked_and_resync_is_always_taken() {
    assert_eq!(
        EventTypes::from_names(["MessageEvent", "Typo"]),
        Err("Typo".to_owned())
    );
    let none = only(&[]);
    assert!(none.admits(EventTypes::of_kind("ResyncEvent")));
    assert!(!none.admits(EventTypes::of_kind("MessageEvent")));
    assert_eq!(none.names(), Some(vec!["ResyncEvent"]));
    assert_eq!(ALL.names(), None);
    // Every event the hub can carry has a name a client can ask for.
    let events = [
        login("a"),
        message(1),
        Event::Resync(ResyncEvent { reason: "r".into() }),
        Event::MessageDeleted(crate::events::MessageDeletedEvent {
            chat: "c".into(),
            id: 1,
        }),
    ];
    for event in events {
        assert!(crate::events::EVENT_TYPE_NAMES.contains(&event.kind()));
        assert!(only(&[event.kind()]).admits(EventTypes::of_kind(event.kind())));
    }
}

#[test]
fn a_version_2_snapshot_restores_queues_that_take_every_type() {
    use super::snapshot_v2::{QueueSnapshotV2, SessionSnapshotV2, SnapshotV2};
    let v2 = SnapshotV2 {
        events: vec![("MessageEvent".into(), "{}".into())],
        sessions: vec![SessionSnapshotV2 {
            session: 1,
            default_polled: true,
            default: QueueSnapshotV2 {
                next_id: 2,
                lost: false,
                events: vec![0],
            },
            explicit: vec![(
                "q".into(),
                QueueSnapshotV2 {
                    next_id: 1,
                    lost: false,
                    events: vec![],
                },
            )],
        }],
    };
    let hub = Hub::new(limits(100));
    assert_eq!(hub.restore(&snapshot_bytes(2, &v2), |_| true), Ok(2));
    let snapshot = decode_snapshot(&hub.snapshot()).unwrap();
    assert!(snapshot.sessions[0].explicit[0].1.event_types.is_none());
}

// Positioned hubs: ids are log positions shared by every node.

fn positioned_hub(capacity: usize) -> Arc<Hub> {
    Arc::new(Hub::positioned(limits(capacity)))
}

/// `(id, message id)` of every event in a queue right now.
async fn pending_pairs(hub: &Hub, s: SessionHandle, queue: &str) -> Vec<(u64, u64)> {
    let batch = pending(hub, s, queue).await;
    batch.iter().map(|d| (d.id, message_id(d))).collect()
}

/// Opens an explicit queue with a fresh id at `position`.
fn queue_at(hub: &Hub, s: SessionHandle, types: EventTypes, position: u64) -> String {
    let id = new_queue_id().unwrap();
    assert!(hub.open_queue_at(s, id.clone(), types, position));
    id
}

#[test]
fn a_positioned_event_costs_one_word_more() {
    assert_eq!(std::mem::size_of::<EncodedEvent>(), 48);
    assert_eq!(message(1).encode().position, 0);
}

#[tokio::test]
async fn positioned_ids_are_the_log_positions_in_order() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    for (position, id) in [(10, 1), (25, 2), (26, 3), (100, 4)] {
        hub.deliver_at(position, [1], &message(id));
    }
    assert_eq!(
        pending_pairs(&hub, 1, &queue).await,
        [(10, 1), (25, 2), (26, 3), (100, 4)]
    );
    assert_eq!(hub.last_position(), 100);
}

#[tokio::test]
async fn positioned_acknowledgement_drops_events_up_to_the_position() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    for (position, id) in [(10, 1), (25, 2), (26, 3), (100, 4)] {
        hub.deliver_at(position, [1], &message(id));
    }
    let poll = |ack| hub.poll_queue(1, &queue, ack, Duration::ZERO);
    assert_eq!(queue_ids(&poll(9).await.unwrap()), [10, 25, 26, 100]);
    assert_eq!(queue_ids(&poll(25).await.unwrap()), [26, 100]);
    // An ack between two positions confirms the ones below it.
    assert_eq!(queue_ids(&poll(99).await.unwrap()), [100]);
    assert!(poll(100).await.unwrap().is_empty());
    assert_eq!(
        hub.stats().buffered,
        1,
        "only the unread default queue's resync is left"
    );
}

#[tokio::test]
async fn a_queue_opened_at_a_position_gets_only_later_events() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    // Opened ahead of what this node has seen: it skips events up to its position.
    let ahead = queue_at(&hub, 1, ALL, 12);
    hub.open_session_at(2, 12);
    reads_its_default_queue(&hub, 2).await;
    for (position, id) in [(10, 1), (12, 2), (13, 3)] {
        hub.deliver_at(position, [1, 2], &message(id));
    }
    assert_eq!(pending_pairs(&hub, 1, &ahead).await, [(13, 3)]);
    let PollReply::Event(first) = hub.poll_default(2, None, Duration::ZERO).await else {
        panic!("the default queue holds event 13");
    };
    assert_eq!((first.id, message_id(&first)), (13, 3));
    assert!(matches!(
        hub.poll_default(2, None, Duration::ZERO).await,
        PollReply::Empty
    ));
    // Opened without a position: after the last event delivered, which is its last_event_id.
    let (now, last_event_id) = hub.open_queue(1, ALL).unwrap();
    assert_eq!(last_event_id, 13);
    hub.deliver_at(14, [1], &message(4));
    assert_eq!(pending_pairs(&hub, 1, &now).await, [(14, 4)]);
    // A session registered without a position starts after the last event too.
    hub.open_session(3);
    reads_its_default_queue(&hub, 3).await;
    hub.deliver_at(20, [3], &message(5));
    let PollReply::Event(third) = hub.poll_default(3, Some(0), Duration::ZERO).await else {
        panic!("the default queue holds event 20");
    };
    assert_eq!((third.id, message_id(&third)), (20, 5));
}

#[tokio::test]
async fn open_queue_at_keeps_an_existing_queue_and_refuses_unknown_sessions() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    hub.deliver_at(5, [1], &message(1));
    // Replayed again (say, a node reading the log twice): the queue keeps its event.
    assert!(hub.open_queue_at(1, queue.clone(), ALL, 5));
    assert_eq!(pending_pairs(&hub, 1, &queue).await, [(5, 1)]);
    assert!(!hub.open_queue_at(9, new_queue_id().unwrap(), ALL, 5));
    // The per-session cap holds as with `open_queue`.
    let capped = Hub::positioned(HubLimits {
        capacity: 100,
        queues_per_session: 2,
    });
    capped.open_session_at(1, 0);
    let ids: Vec<String> = (0..3).map(|_| queue_at(&capped, 1, ALL, 0)).collect();
    assert_eq!(capped.stats().explicit_queues, 2);
    assert_eq!(capped.stats().evicted, 1);
    assert!(!has_queue(&capped, 1, &ids[0]));
}

#[tokio::test]
async fn positions_that_do_not_increase_and_staged_events_are_dropped() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    hub.deliver_at(10, [1], &message(1));
    hub.deliver_at(10, [1], &message(2));
    hub.deliver_at(7, [1], &message(3));
    hub.stage(0, [1], &message(4));
    hub.release(0);
    hub.deliver_at(11, [1], &message(5));
    assert_eq!(pending_pairs(&hub, 1, &queue).await, [(10, 1), (11, 5)]);
    // A single-node hub takes no positioned calls.
    let dense = hub_with(100, [1]);
    let (queue, _) = dense.open_queue(1, ALL).unwrap();
    dense.deliver_at(10, [1], &message(1));
    assert!(!dense.open_queue_at(1, new_queue_id().unwrap(), ALL, 0));
    dense.open_session_at(2, 0);
    assert!(!dense.has_session(2));
    assert!(pending(&dense, 1, &queue).await.is_empty());
}

/// One step of a change log as every node replays it.
enum Step {
    Session(SessionHandle, u64),
    Queue(SessionHandle, &'static str, EventTypes, u64),
    Event(u64, Vec<SessionHandle>, Event),
}

fn deleted(id: u64) -> Event {
    Event::MessageDeleted(crate::events::MessageDeletedEvent {
        chat: "general".into(),
        id,
    })
}

/// `(id, type, payload)` of every event a queue holds.
type Seen = Vec<(u64, String, String)>;

fn seen(batch: &[Delivered]) -> Seen {
    batch
        .iter()
        .map(|d| {
            let payload = d.event.payload.get().to_owned();
            (d.id, d.event.kind.clone(), payload)
        })
        .collect()
}

/// Replays `log` into a fresh positioned hub and reads every queue.
async fn replay(log: &[Step]) -> Vec<(SessionHandle, String, Seen)> {
    let hub = positioned_hub(4);
    let mut queues = Vec::new();
    for step in log {
        match step {
            Step::Session(s, at) => hub.open_session_at(*s, *at),
            Step::Queue(s, id, types, at) => {
                assert!(hub.open_queue_at(*s, (*id).to_owned(), *types, *at));
                queues.push((*s, (*id).to_owned()));
            }
            Step::Event(at, targets, event) => hub.deliver_at(*at, targets.iter().copied(), event),
        }
    }
    let mut read = Vec::new();
    for (s, id) in queues {
        let held = hub.poll_queue(s, &id, 0, Duration::ZERO).await;
        read.push((s, id, held.map(|b| seen(&b)).unwrap_or_default()));
    }
    for s in [1, 2, 3, 4] {
        let mut held = Vec::new();
        while let PollReply::Event(d) = hub.poll_default(s, None, Duration::ZERO).await {
            held.push(d);
        }
        read.push((s, "default".to_owned(), seen(&held)));
    }
    read
}

/// What `replay` read from session `s`'s queue `id`.
fn held<'a>(read: &'a [(SessionHandle, String, Seen)], s: SessionHandle, id: &str) -> &'a Seen {
    &read.iter().find(|(q, i, _)| *q == s && i == id).unwrap().2
}

#[tokio::test]
async fn two_hubs_replaying_one_log_hand_out_the_same_ids_and_events() {
    let log = vec![
        Step::Session(1, 0),
        Step::Session(2, 0),
        Step::Session(4, 0),
        Step::Event(3, vec![1, 2, 4], message(1)),
        Step::Queue(1, "q1", ALL, 3),
        Step::Event(5, vec![1, 2, 4], login("bob")),
        Step::Session(3, 5),
        Step::Queue(2, "q2", only(&["MessageEvent"]), 5),
        Step::Event(8, vec![1, 2, 3, 4], message(2)),
        Step::Event(9, vec![1, 2, 3, 4], deleted(2)),
        Step::Queue(3, "q3", ALL, 9),
        Step::Event(12, vec![2, 3, 4], login("cat")),
        // Session 4's default queue (capacity 4) overflows here.
        Step::Event(13, vec![2, 3, 4], message(3)),
        Step::Event(20, vec![1, 2, 3, 4], message(4)),
    ];
    let first = replay(&log).await;
    let second = replay(&log).await;
    assert_eq!(first, second);
    let ids = |s, id| -> Vec<u64> { held(&first, s, id).iter().map(|e| e.0).collect() };
    let kinds =
        |s, id| -> Vec<String> { held(&first, s, id).iter().map(|e| e.1.clone()).collect() };
    assert_eq!(ids(1, "q1"), [5, 8, 9, 20]);
    assert_eq!(ids(2, "q2"), [8, 13, 20]);
    assert_eq!(ids(3, "q3"), [12, 13, 20]);
    // Sessions with explicit queues hold one resync in their unread default queue, at the
    // position of the first event it stands for.
    for (s, resync) in [(1, 5), (2, 8), (3, 12)] {
        assert_eq!(ids(s, "default"), [resync]);
        assert_eq!(kinds(s, "default"), ["ResyncEvent"]);
    }
    assert_eq!(ids(4, "default"), [13, 20]);
    assert_eq!(kinds(4, "default"), ["ResyncEvent", "MessageEvent"]);
}

#[tokio::test]
async fn positioned_overflow_resyncs_take_the_position_of_the_event_that_overflowed() {
    let hub = positioned_hub(3);
    hub.open_session_at(1, 0);
    reads_its_default_queue(&hub, 1).await;
    for (position, id) in [(10, 1), (20, 2), (30, 3), (40, 4)] {
        hub.deliver_at(position, [1], &message(id));
    }
    assert_eq!(hub.stats().overflowed, 1);
    let PollReply::Event(resync) = hub.poll_default(1, Some(0), SHORT).await else {
        panic!("expected a ResyncEvent");
    };
    assert_eq!(
        (resync.id, resync_reason(&resync)),
        (40, OVERFLOW_REASON.into())
    );
    // A fresh event, not the hub's shared one: that one stays unpositioned.
    assert_eq!(hub.lock().resync.position, 0);
    hub.deliver_at(50, [1], &message(5));
    let PollReply::Event(next) = hub.poll_default(1, Some(40), SHORT).await else {
        panic!("expected an event");
    };
    assert_eq!((next.id, message_id(&next)), (50, 5));
    // Overflowing again after events were read: the new resync's id is above every earlier one.
    for (position, id) in [(60, 6), (70, 7), (80, 8)] {
        hub.deliver_at(position, [1], &message(id));
    }
    let PollReply::Event(again) = hub.poll_default(1, Some(50), SHORT).await else {
        panic!("expected a ResyncEvent");
    };
    assert_eq!((again.id, again.event.kind.as_str()), (80, "ResyncEvent"));
}

#[tokio::test]
async fn an_unread_positioned_default_queue_keeps_one_resync_then_carries_on() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    for (position, id) in [(4, 1), (9, 2), (15, 3)] {
        hub.deliver_at(position, [1], &message(id));
    }
    assert_eq!(queue_ids(&pending(&hub, 1, &queue).await), [4, 9, 15]);
    let PollReply::Event(first) = hub.poll_default(1, Some(0), Duration::ZERO).await else {
        panic!("the default queue holds a ResyncEvent");
    };
    assert_eq!((first.id, resync_reason(&first)), (4, UNREAD_REASON.into()));
    hub.deliver_at(16, [1], &message(4));
    let PollReply::Event(next) = hub.poll_default(1, Some(first.id), Duration::ZERO).await else {
        panic!("a polled default queue gets every event");
    };
    assert_eq!((next.id, message_id(&next)), (16, 4));
}

#[tokio::test]
async fn legacy_poll_acknowledges_by_position() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    for (position, id) in [(10, 1), (20, 2), (30, 3)] {
        hub.deliver_at(position, [1], &message(id));
    }
    let poll = |ack| hub.poll_default(1, ack, Duration::ZERO);
    let pair = |reply| match reply {
        PollReply::Event(d) => (d.id, message_id(&d)),
        PollReply::Empty => panic!("expected an event"),
    };
    assert_eq!(pair(poll(Some(0)).await), (10, 1));
    // Sent again until acknowledged.
    assert_eq!(pair(poll(Some(9)).await), (10, 1));
    assert_eq!(pair(poll(Some(10)).await), (20, 2));
    assert_eq!(pair(poll(Some(25)).await), (30, 3));
    assert_eq!(pair(poll(None).await), (30, 3));
    assert!(matches!(poll(Some(30)).await, PollReply::Empty));
}

#[tokio::test]
async fn a_positioned_hub_snapshots_no_queues() {
    let hub = positioned_hub(100);
    hub.open_session_at(1, 0);
    let queue = queue_at(&hub, 1, ALL, 0);
    hub.deliver_at(10, [1], &message(1));
    let snapshot = hub.snapshot();
    assert!(decode_snapshot(&snapshot).unwrap().sessions.is_empty());
    let other = positioned_hub(100);
    assert_eq!(other.restore(&snapshot, |_| true), Ok(0));
    // A single node's snapshot numbers its events itself: not for a positioned hub.
    let dense = hub_with(100, [1]);
    publish(&dense, &[1], 1);
    assert!(other.restore(&dense.snapshot(), |_| true).is_err());
    assert_eq!(pending_pairs(&hub, 1, &queue).await, [(10, 1)]);
}
