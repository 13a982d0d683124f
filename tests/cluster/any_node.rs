//! Any node answers any request: a session made on one node works on the others, and they all
//! give the answer one node alone would give.

use crate::client::{Client, Reply};
use crate::harness::{ADMIN, CHAT, Harness};
use serde_json::{Value, json};

/// Sends the same request to every node with `client`'s cookies; all must answer 200 alike.
async fn same_on_every_node(
    cluster: &Harness,
    client: &Client,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut answers: Vec<Reply> = Vec::new();
    for i in 0..cluster.nodes.len() {
        let node = cluster.on(client, i);
        answers.push(match &body {
            Some(body) => node.post(path, body.clone()).await,
            None => node.get(path).await,
        });
    }
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer.status,
            200,
            "{path} on node{}: {}",
            i + 1,
            answer.body
        );
        assert_eq!(
            answer.body,
            answers[0].body,
            "{path}: node{} answers otherwise than node1",
            i + 1
        );
    }
    answers.swap_remove(0).body
}

fn chat_names(chats: &Value) -> Vec<&str> {
    chats
        .as_array()
        .expect("a list of chat reports")
        .iter()
        .map(|c| c["chat"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_answers() {
    let Some(cluster) = Harness::start().await else {
        return;
    };
    // Registered, activated and signed in on node 1 alone.
    let admin = cluster.client();
    cluster.register(&cluster.on(&admin, 0), ADMIN).await;
    let node = |i: usize| cluster.on(&admin, i);

    node(1)
        .post("/api/adminonly/createChat", json!({ "chat": "Ops" }))
        .await
        .ok("createChat on node 2");
    let chats = same_on_every_node(&cluster, &admin, "/api/loggedonly/getChats", None).await;
    assert_eq!(chat_names(&chats), ["Main", "Ops"]);

    let report = node(2)
        .post("/api/loggedonly/joinChat", json!({ "chat": "Ops" }))
        .await
        .ok("joinChat on node 3");
    assert_eq!(report["joined"], true);
    assert_eq!(report["users"][0]["user"], ADMIN);
    assert_eq!(report["users"][0]["admin"], true);

    let message = node(1)
        .post(
            "/api/loggedonly/postMessage",
            json!({ "chat": "Ops", "text": "posted on node 2" }),
        )
        .await
        .ok("postMessage on node 2");
    let chat = Some(json!({ "chat": "Ops" }));
    let history = same_on_every_node(
        &cluster,
        &admin,
        "/api/loggedonly/getLastMessages",
        chat.clone(),
    )
    .await;
    assert_eq!(history.as_array().unwrap().last(), Some(&message));
    same_on_every_node(
        &cluster,
        &admin,
        "/api/loggedonly/getMessages",
        chat.clone(),
    )
    .await;
    let users = same_on_every_node(&cluster, &admin, "/api/loggedonly/getUsers", chat).await;
    assert_eq!(users[0]["user"], ADMIN);
    let chats = same_on_every_node(&cluster, &admin, "/api/loggedonly/getChats", None).await;
    let ops = &chats[1];
    assert_eq!(
        (ops["joined"].clone(), ops["messages"].clone()),
        (json!(true), history)
    );

    // Refusals are the same whichever node gives them.
    let again = node(0)
        .post("/api/adminonly/createChat", json!({ "chat": "ops" }))
        .await;
    assert_eq!(
        (again.status, again.body),
        (400, json!({ "error": "chat already exists" }))
    );
    let twice = node(0)
        .post("/api/loggedonly/joinChat", json!({ "chat": "Ops" }))
        .await;
    assert_eq!(
        (twice.status, twice.body),
        (400, json!({ "error": "user is already logged in chat" }))
    );
    let guest = cluster.guest("visitor").await;
    let refused = cluster
        .on(&guest, 0)
        .post("/api/adminonly/createChat", json!({ "chat": "Mine" }))
        .await;
    assert_eq!(
        (refused.status, refused.body),
        (403, json!({ "error": "admin only" }))
    );
    cluster
        .on(&guest, 2)
        .post("/api/loggedonly/joinChat", json!({ "chat": CHAT }))
        .await
        .ok("a guest made through nginx joins on node 3");

    let export = node(2).get("/api/adminonly/export").await;
    assert_eq!(export.status, 200, "export on node 3");

    node(1)
        .post("/api/adminonly/removeChat", json!({ "chat": "Ops" }))
        .await
        .ok("removeChat on node 2");
    let chats = same_on_every_node(&cluster, &admin, "/api/loggedonly/getChats", None).await;
    assert_eq!(chat_names(&chats), ["Main"]);
    let gone = node(2)
        .post("/api/loggedonly/joinChat", json!({ "chat": "Ops" }))
        .await;
    assert_eq!(
        (gone.status, gone.body),
        (400, json!({ "error": "no such chat" }))
    );
}
