//! The shared change log's reader (`store::postgres::tail`) against a real PostgreSQL: rows come
//! out in transaction-id order even when an older transaction commits last, a ring on one node
//! wakes another at once, and a reader that starts again where one stopped repeats nothing.

use crate::cluster::Cluster;
use natter::store::mirror::pg::{self, Target};
use natter::store::postgres::PgStore;
use natter::store::postgres::tail::{self, Cursor, LogRow, Tail};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A database with the store's tables (opening the store once applies the migrations).
async fn migrated(pg: &Cluster, name: &str) -> (Target, tokio_postgres::Client) {
    let url = pg.create_db(name).await;
    drop(PgStore::open(pg::parse(&url).unwrap(), false).unwrap());
    (pg::parse(&url).unwrap(), pg.client(name).await)
}

/// A tail whose deliveries arrive on a channel, one message per batch.
struct Reader {
    tail: Tail,
    batches: mpsc::UnboundedReceiver<Vec<LogRow>>,
}

impl Reader {
    fn start(target: &Target, from: Cursor, fallback: Duration) -> Reader {
        let (sender, batches) = mpsc::unbounded_channel();
        let tail = Tail::start(
            target.clone(),
            from,
            fallback,
            Box::new(move |rows| {
                let _ = sender.send(rows);
            }),
        )
        .unwrap();
        Reader { tail, batches }
    }

    /// The next `n` rows, in the order delivered, waiting at most `within`.
    async fn take(&mut self, n: usize, within: Duration) -> Vec<LogRow> {
        let mut rows = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while rows.len() < n {
            match tokio::time::timeout_at(deadline, self.batches.recv()).await {
                Ok(Some(batch)) => {
                    assert!(!batch.is_empty(), "an empty batch was delivered");
                    rows.extend(batch);
                }
                _ => panic!(
                    "{} of {n} rows within {within:?}: {:?}",
                    rows.len(),
                    summary(&rows)
                ),
            }
        }
        assert_eq!(
            rows.len(),
            n,
            "more rows than expected: {:?}",
            summary(&rows)
        );
        rows
    }

    /// Asserts nothing is delivered for `quiet`.
    async fn nothing_for(&mut self, quiet: Duration) {
        if let Ok(Some(batch)) = tokio::time::timeout(quiet, self.batches.recv()).await {
            panic!("unexpected rows: {:?}", summary(&batch));
        }
    }
}

fn summary(rows: &[LogRow]) -> Vec<(u64, i32, String, Vec<u8>)> {
    rows.iter()
        .map(|r| (r.cursor.xid, r.cursor.idx, r.node.clone(), r.body.clone()))
        .collect()
}

const INSERT: &str =
    "INSERT INTO cluster_log (idx, node, epoch, written, body) VALUES ($1, $2, $3, 0, $4)";

/// Inserts one row in the client's current transaction (or its own) and returns its xid.
async fn insert(
    client: &tokio_postgres::Client,
    idx: i32,
    node: &str,
    epoch: i64,
    body: &[u8],
) -> u64 {
    client
        .execute(INSERT, &[&idx, &node, &epoch, &body])
        .await
        .unwrap();
    let xid: String = client
        .query_one(
            "SELECT xid::text FROM cluster_log WHERE node = $1 AND epoch = $2 AND idx = $3",
            &[&node, &epoch, &idx],
        )
        .await
        .unwrap()
        .get(0);
    xid.parse().unwrap()
}

fn row(xid: u64, idx: i32, node: &str, epoch: u64, body: &[u8]) -> LogRow {
    LogRow {
        cursor: Cursor { xid, idx },
        node: node.into(),
        epoch,
        body: body.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_transaction_that_commits_later_is_read_first_and_once() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let (target, _db) = migrated(&pg, "log_order_trap").await;
    let mut first = Reader::start(&target, Cursor::default(), Duration::from_millis(50));

    // T1 takes its xid first and stays open; T2 takes a newer one and commits.
    let t1 = pg.client("log_order_trap").await;
    t1.batch_execute("BEGIN").await.unwrap();
    let xid1 = insert(&t1, 0, "n1", 7, b"older").await;
    let t2 = pg.client("log_order_trap").await;
    let xid2 = insert(&t2, 0, "n2", 9, b"newer").await;
    assert!(
        xid1 < xid2,
        "T1 {xid1} must hold the older xid than T2 {xid2}"
    );

    // Committed, but below it an older transaction still runs: not handed out yet, through
    // many fallback reads and a ring.
    first.tail.ring();
    first.nothing_for(Duration::from_millis(600)).await;
    assert_eq!(*first.tail.position().borrow(), Cursor::default());

    t1.batch_execute("COMMIT").await.unwrap();
    let expected = vec![
        row(xid1, 0, "n1", 7, b"older"),
        row(xid2, 0, "n2", 9, b"newer"),
    ];
    let got = first.take(2, Duration::from_secs(5)).await;
    assert_eq!(summary(&got), summary(&expected));
    assert_eq!(got, expected);
    // Exactly once: later reads find nothing more.
    first.nothing_for(Duration::from_millis(400)).await;
    assert_eq!(
        *first.tail.position().borrow(),
        Cursor { xid: xid2, idx: 0 }
    );

    // A reader started from the beginning sees the same log in the same order.
    let mut second = Reader::start(&target, Cursor::default(), Duration::from_millis(50));
    assert_eq!(second.take(2, Duration::from_secs(5)).await, expected);
    second.nothing_for(Duration::from_millis(300)).await;

    // A starting node's cursor: everything below it is settled, so it reads nothing old.
    let db = pg.client("log_order_trap").await;
    let start = tail::start_cursor(&db).await.unwrap();
    assert!(start > Cursor { xid: xid2, idx: 0 }, "{start:?}");
    assert_eq!(start.idx, -1);
    let base = tail::base_xid(&db).await.unwrap();
    assert!(base > 0 && base < xid1, "base {base}, first row {xid1}");
    let mut fresh = Reader::start(&target, start, Duration::from_millis(50));
    fresh.nothing_for(Duration::from_millis(300)).await;
    let xid3 = insert(&db, 0, "n3", 1, b"after start").await;
    assert_eq!(
        fresh.take(1, Duration::from_secs(5)).await,
        vec![row(xid3, 0, "n3", 1, b"after start")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_on_one_node_wakes_another_long_before_the_fallback() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let (target, db) = migrated(&pg, "log_order_ring").await;
    let fallback = Duration::from_secs(30);
    // A first row, read at start, shows each reader is connected and listening.
    let xid0 = insert(&db, 0, "a", 1, b"before").await;
    let mut a = Reader::start(&target, Cursor::default(), fallback);
    let mut b = Reader::start(&target, Cursor::default(), fallback);
    let before = vec![row(xid0, 0, "a", 1, b"before")];
    assert_eq!(a.take(1, Duration::from_secs(10)).await, before);
    assert_eq!(b.take(1, Duration::from_secs(10)).await, before);

    // Node a commits a change of two rows and rings.
    db.batch_execute("BEGIN").await.unwrap();
    let xid1 = insert(&db, 0, "a", 2, b"first of two").await;
    insert(&db, 1, "a", 2, b"second of two").await;
    db.batch_execute("COMMIT").await.unwrap();
    let rang = Instant::now();
    a.tail.ring();
    let expected = vec![
        row(xid1, 0, "a", 2, b"first of two"),
        row(xid1, 1, "a", 2, b"second of two"),
    ];
    assert_eq!(b.take(2, Duration::from_secs(2)).await, expected);
    let woke = rang.elapsed();
    assert_eq!(a.take(2, Duration::from_secs(2)).await, expected);
    println!("a ring reached the other reader's delivery in {woke:?}");
    assert!(woke < Duration::from_secs(2), "{woke:?}");

    // Many rings at once share NOTIFYs and still wake the other reader for each change.
    for round in 0..20u8 {
        let xid = insert(&db, 0, "a", 10 + i64::from(round), &[round]).await;
        for _ in 0..5 {
            a.tail.ring();
        }
        let expected = vec![row(xid, 0, "a", 10 + u64::from(round), &[round])];
        assert_eq!(b.take(1, Duration::from_secs(2)).await, expected);
        assert_eq!(a.take(1, Duration::from_secs(2)).await, expected);
    }
    b.nothing_for(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_started_again_from_its_position_repeats_nothing() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let (target, db) = migrated(&pg, "log_order_restart").await;
    // More than two batches in one transaction, then one more change.
    db.batch_execute(
        "INSERT INTO cluster_log (idx, node, epoch, written, body) \
         SELECT i, 'bulk', 1, 0, int4send(i) FROM generate_series(0, 2499) AS i",
    )
    .await
    .unwrap();
    let xid_small = insert(&db, 0, "n", 2, b"small").await;

    let mut first = Reader::start(&target, Cursor::default(), Duration::from_millis(100));
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while got.len() < 2501 {
        let batch = tokio::time::timeout(Duration::from_secs(10), first.batches.recv())
            .await
            .unwrap()
            .unwrap();
        sizes.push(batch.len());
        got.extend(batch);
    }
    println!("batch sizes: {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 1000), "{sizes:?}");
    assert_eq!(got.len(), 2501);
    let bulk_xid = got[0].cursor.xid;
    for (i, r) in got[..2500].iter().enumerate() {
        let i = i32::try_from(i).unwrap();
        assert_eq!(r, &row(bulk_xid, i, "bulk", 1, &i.to_be_bytes()));
    }
    assert_eq!(got[2500], row(xid_small, 0, "n", 2, b"small"));
    first.nothing_for(Duration::from_millis(300)).await;
    let saved = *first.tail.position().borrow();
    assert_eq!(
        saved,
        Cursor {
            xid: xid_small,
            idx: 0
        }
    );
    first.tail.stop();
    drop(first);

    // Written while no reader runs.
    db.batch_execute("BEGIN").await.unwrap();
    let xid_a = insert(&db, 0, "m", 3, b"while stopped 0").await;
    insert(&db, 1, "m", 3, b"while stopped 1").await;
    db.batch_execute("COMMIT").await.unwrap();

    let mut again = Reader::start(&target, saved, Duration::from_millis(100));
    assert_eq!(
        again.take(2, Duration::from_secs(5)).await,
        vec![
            row(xid_a, 0, "m", 3, b"while stopped 0"),
            row(xid_a, 1, "m", 3, b"while stopped 1"),
        ]
    );
    again.nothing_for(Duration::from_millis(300)).await;
    let xid_b = insert(&db, 0, "m", 4, b"after restart").await;
    again.tail.ring();
    assert_eq!(
        again.take(1, Duration::from_secs(5)).await,
        vec![row(xid_b, 0, "m", 4, b"after restart")]
    );
    again.nothing_for(Duration::from_millis(300)).await;
    assert_eq!(
        *again.tail.position().borrow(),
        Cursor { xid: xid_b, idx: 0 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_ids_order_by_number_across_a_new_digit() {
    let Some(pg) = Cluster::start().await else {
        return;
    };
    let (target, db) = migrated(&pg, "log_order_digits").await;
    let xid_of = |row: tokio_postgres::Row| row.get::<_, String>(0).parse::<u64>().unwrap();
    let now = xid_of(
        db.query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .unwrap(),
    );
    // Rows just before and just after the next power of ten: as text "10…0" sorts first.
    let boundary = 10u64.pow(now.to_string().len() as u32);
    while xid_of(
        db.query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .unwrap(),
    ) < boundary - 2
    {}
    let below = insert(&db, 0, "n", 1, b"below").await;
    while xid_of(
        db.query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .unwrap(),
    ) < boundary
    {}
    let above = insert(&db, 0, "n", 2, b"above").await;
    assert!(
        below < boundary && above > boundary,
        "{below} {above} {boundary}"
    );

    let mut reader = Reader::start(&target, Cursor::default(), Duration::from_millis(100));
    assert_eq!(
        reader.take(2, Duration::from_secs(5)).await,
        vec![
            row(below, 0, "n", 1, b"below"),
            row(above, 0, "n", 2, b"above")
        ]
    );
    reader.nothing_for(Duration::from_millis(300)).await;
}
