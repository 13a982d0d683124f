//! Hostile input, generated: every route gets malformed requests (wrong JSON types, non-object
//! bodies, missing and odd fields, huge and deep bodies, invalid UTF-8, wrong methods, chunked
//! bodies, broken and forged cookies, bad query strings). Each must get a 4xx JSON error within
//! seconds, change nothing, and leave the server answering normally.

use crate::helpers::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::time::Duration;

/// Cases per run; CI runs this many.
const CASES: u32 = 10_000;
/// `HOSTILE_CASES` overrides the count (a quick local run, or a longer one).
fn cases() -> u32 {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES)
}

/// Paths that read a JSON body, and the fields each one reads.
const BODY_ROUTES: &[(&str, &[&str])] = &[
    ("/api/register", &["user", "email", "password"]),
    ("/api/authorize", &["user", "password"]),
    ("/api/requestResetPassword", &["user"]),
    (
        "/api/resetPassword",
        &["user", "passwordResetToken", "password"],
    ),
    ("/api/login", &["user"]),
    ("/api/loggedonly/joinChat", &["chat"]),
    ("/api/loggedonly/leaveChat", &["chat"]),
    ("/api/loggedonly/getUsers", &["chat"]),
    ("/api/loggedonly/getLastMessages", &["chat"]),
    ("/api/loggedonly/postMessage", &["chat", "text"]),
    ("/api/adminonly/createChat", &["chat"]),
    ("/api/adminonly/removeChat", &["chat"]),
];

/// Every route with its method, for wrong-method cases.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/register"),
    ("GET", "/api/verifyEmail/u/t"),
    ("POST", "/api/authorize"),
    ("POST", "/api/requestResetPassword"),
    ("POST", "/api/resetPassword"),
    ("POST", "/api/login"),
    ("POST", "/api/loggedonly/login"),
    ("POST", "/api/loggedonly/logout"),
    ("PUT", "/api/loggedonly/keepalive"),
    ("GET", "/api/loggedonly/poll"),
    ("POST", "/api/loggedonly/queues"),
    ("GET", "/api/loggedonly/events"),
    ("POST", "/api/loggedonly/joinChat"),
    ("POST", "/api/loggedonly/leaveChat"),
    ("GET", "/api/loggedonly/getChats"),
    ("POST", "/api/loggedonly/getUsers"),
    ("POST", "/api/loggedonly/getLastMessages"),
    ("POST", "/api/loggedonly/postMessage"),
    ("POST", "/api/adminonly/createChat"),
    ("POST", "/api/adminonly/removeChat"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Who sends the request.
#[derive(Debug, Clone)]
enum Caller {
    Nobody,
    /// The session of a guest who is in `Main` (state that must not change).
    Member,
    /// A cookie header that is not a valid session.
    Cookie(String),
}

#[derive(Debug, Clone)]
struct Case {
    method: String,
    path: String,
    body: Vec<u8>,
    chunked: bool,
    content_type: Option<&'static str>,
    caller: Caller,
}

/// A string that is never a valid user or chat name, nor a valid password or text on its own:
/// it carries a character outside names (a control, a space at an end, punctuation, NUL).
fn bad_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,40}[\\x00-\\x1f /!?@#$%^&*()\\[\\]{}<>;:'\"`~]\\PC{0,40}",
        "[ \\t]{1,3}\\PC{0,10}",
        Just("a".repeat(70_000)),
        Just("\u{202e}\u{0000}\u{feff}".to_owned()),
    ]
}

/// A JSON value of the wrong type for a string field.
fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        prop::collection::vec("\\PC{0,8}", 0..4).prop_map(|v| json!(v)),
        Just(json!({"nested": {"deeper": [1, 2, 3]}})),
    ]
}

/// A body that is not a JSON object at all.
fn not_an_object() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec("\\PC{0,12}", 0..4).prop_map(|v| json!(v).to_string().into_bytes()),
        "\\PC{0,30}".prop_map(|s| json!(s).to_string().into_bytes()),
        any::<f64>().prop_map(|n| n.to_string().into_bytes()),
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        Just(Vec::new()),
        Just(b"{\"user\": ".to_vec()),
        Just(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
        Just(format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut b| {
            b.insert(0, 0xff);
            b
        }),
        Just(b"{\"user\":\"\xc3\x28\"}".to_vec()),
        Just(vec![b' '; 70_000]),
    ]
}

/// An object body for a route's fields where at least one field is wrong: a wrong type, a
/// missing field, or a bad string; other fields may be anything, extra fields are added.
fn bad_object(
    path: &'static str,
    fields: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    let n = fields.len();
    // A reset request for a name that cannot exist is answered like any other: 200, by design.
    let strings_are_refused = path != "/api/requestResetPassword";
    (
        0..n,
        prop_oneof![
            wrong_type().prop_map(Some),
            Just(None),
            bad_string()
                .prop_filter("refused as a string", move |s| strings_are_refused
                    || s.is_empty())
                .prop_map(|s| Some(Value::from(s)))
        ],
        prop::collection::vec(prop::option::of("\\PC{0,20}"), n),
        prop::option::of(("[a-z]{1,8}", wrong_type())),
    )
        .prop_map(move |(bad, bad_value, others, extra)| {
            let mut object = serde_json::Map::new();
            for (i, field) in fields.iter().enumerate() {
                let value = if i == bad {
                    bad_value.clone()
                } else {
                    others[i].clone().map(Value::from)
                };
                if let Some(value) = value {
                    object.insert((*field).to_owned(), value);
                }
            }
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            Value::Object(object).to_string().into_bytes()
        })
}

fn forged_cookie() -> impl Strategy<Value = Caller> {
    prop_oneof![
        "\\PC{0,60}".prop_map(|v| Caller::Cookie(format!("natter_session={v}"))),
        "[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}"
            .prop_map(|v| Caller::Cookie(format!("natter_session={v}"))),
        Just(Caller::Cookie("natter_session=".to_owned())),
        Just(Caller::Cookie(
            "natter_session=a.b; natter_session=c.d".to_owned()
        )),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ])
}

/// A request that must be refused with a 4xx.
fn hostile_case() -> impl Strategy<Value = Case> {
    let body_route = prop::sample::select(BODY_ROUTES).prop_flat_map(|(path, fields)| {
        let body = prop_oneof![not_an_object(), bad_object(path, fields)];
        // The member's session is valid: the body alone must be refused.
        let caller = prop_oneof![Just(Caller::Member), Just(Caller::Nobody), forged_cookie()];
        (Just(path), body, caller)
    });
    let bad_body = (body_route, any::<bool>(), content_type()).prop_map(
        |((path, body, caller), chunked, content_type)| Case {
            method: "POST".into(),
            path: path.into(),
            body,
            chunked,
            content_type,
            caller,
        },
    );
    let wrong_method = (
        prop::sample::select(ROUTES),
        prop::sample::select(METHODS),
        prop_oneof![Just(Caller::Member), forged_cookie()],
    )
        .prop_filter("the right method", |((method, _), other, _)| {
            method != other
        })
        .prop_map(|((_, path), method, caller)| Case {
            method: method.into(),
            path: path.into(),
            body: b"{}".to_vec(),
            chunked: false,
            content_type: Some("application/json"),
            caller,
        });
    let no_session = (prop::sample::select(ROUTES), forged_cookie())
        .prop_filter("needs a session", |((_, path), _)| {
            path.starts_with("/api/loggedonly") || path.starts_with("/api/adminonly")
        })
        .prop_map(|((method, path), caller)| Case {
            method: method.into(),
            path: path.into(),
            body: br#"{"chat":"Main","text":"hello"}"#.to_vec(),
            chunked: false,
            content_type: Some("application/json"),
            caller,
        });
    let bad_query = (
        prop_oneof![
            "[^0-9&#]{1,20}".prop_map(|v| format!("/api/loggedonly/poll?last_event_id={v}")),
            "\\PC{0,30}".prop_map(|v| format!(
                "/api/loggedonly/events?queue_id={}&last_event_id=0",
                urlencoding::encode(&v)
            )),
            Just("/api/loggedonly/events".to_owned()),
            Just("/api/loggedonly/events?last_event_id=-1&queue_id=x".to_owned()),
        ],
        prop_oneof![Just(Caller::Member), forged_cookie()],
    )
        .prop_map(|(path, caller)| Case {
            method: "GET".into(),
            path,
            body: Vec::new(),
            chunked: false,
            content_type: None,
            caller,
        });
    let unknown_path = "/api/[a-zA-Z/%.]{0,40}"
        .prop_filter("an existing route", |p| {
            !ROUTES.iter().any(|(_, r)| r == p) && !p.starts_with("/api/verifyEmail/")
        })
        .prop_map(|path| Case {
            method: "POST".into(),
            path,
            body: b"{}".to_vec(),
            chunked: false,
            content_type: None,
            caller: Caller::Member,
        });
    prop_oneof![4 => bad_body, 2 => wrong_method, 2 => no_session, 1 => bad_query, 1 => unknown_path]
}

/// What the server answered: status, content type, body. `None` when it refused an oversized
/// body by closing the connection while the client was still sending it.
async fn send(
    http: &reqwest::Client,
    server: &TestServer,
    member: &str,
    case: &Case,
) -> Option<(u16, String, String)> {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
    let mut request = http
        .request(method, format!("http://{}{}", server.addr, case.path))
        .timeout(Duration::from_secs(5));
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    match &case.caller {
        Caller::Nobody => {}
        Caller::Member => request = request.header("cookie", member),
        Caller::Cookie(cookie) => request = request.header("cookie", cookie.as_str()),
    }
    request = if case.chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            case.body.chunks(4096).map(|c| Ok(c.to_vec())).collect();
        request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    } else {
        request.body(case.body.clone())
    };
    let response = match request.send().await {
        Ok(response) => response,
        // A 413 answered before the body was read ends the connection under the sender's feet.
        Err(e) if case.body.len() > MAX_BODY && e.is_request() && !e.is_timeout() => return None,
        Err(e) => panic!("no answer within 5 s: {e:?}"),
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Some((status, content_type, response.text().await.unwrap()))
}

/// The test server's `max_body_bytes`.
const MAX_BODY: usize = 65536;

/// What a member of `Main` sees: must be the same before and after the storm.
async fn picture(server: &TestServer, member: &crate::helpers::Client) -> Value {
    let chats = member.get("/api/loggedonly/getChats").await.json();
    let healthy = member.get("/healthz").await.status;
    let _ = server;
    json!({"chats": chats, "healthz": healthy})
}

#[test]
fn hostile_requests_get_a_4xx_json_error_and_change_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, member) = runtime.block_on(async {
        let server = TestServer::with_config(&format!("max_body_bytes = {MAX_BODY}")).await;
        let member = server.guest_in("member", "Main").await;
        (server, member)
    });
    let cookie = runtime
        .block_on(member.post("/api/loggedonly/login", json!({})))
        .header("set-cookie")
        .unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let before = runtime.block_on(picture(&server, &member));

    // A fresh connection per case: the server closes one after refusing a body unread, and a
    // pooled connection could be picked up just as it closes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let outcome = runner.run(&hostile_case(), |case| {
        let Some((status, content_type, body)) =
            runtime.block_on(send(&http, &server, &cookie, &case))
        else {
            *statuses.lock().unwrap().entry(413).or_default() += 1;
            return Ok(());
        };
        prop_assert!((400..500).contains(&status), "{status} {body} for {case:?}");
        prop_assert!(
            content_type.starts_with("application/json"),
            "{content_type} for {case:?}"
        );
        let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        prop_assert!(
            error["error"].is_string(),
            "not a JSON error: {body} for {case:?}"
        );
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    eprintln!(
        "hostile input: {} cases, statuses {:?}",
        cases(),
        statuses.lock().unwrap()
    );

    let after = runtime.block_on(picture(&server, &member));
    assert_eq!(before, after, "the storm changed what the member sees");
    // And the server still does its job.
    let message = runtime.block_on(member.say("Main", "still here"));
    assert_eq!(message["text"], "still here");
}
