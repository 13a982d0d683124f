//! A cluster to test: a throwaway PostgreSQL with one database, three natter nodes on it (each
//! with its own config, data directory and port) and nginx in front of them.

use crate::client::Client;
use crate::nginx::Nginx;
use crate::node::{Node, free_port};
use crate::pg;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// How long a node holds a parked poll (short: the tests wait for empty polls to end).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// nginx's proxy_read_timeout: well above POLL_TIMEOUT.
const PROXY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The chat every node ensures at start.
pub const CHAT: &str = "Main";
/// The admin account's name (the config's `admins`).
pub const ADMIN: &str = "root";
pub const PASSWORD: &str = "password123";

/// The config lines that make a node a cluster member named `name`. (Returning "" instead
/// runs the nodes as plain PostgreSQL-store servers sharing the database: the harness checks
/// pass that way, the delivery and any-node tests do not.)
pub fn cluster_lines(name: &str) -> String {
    format!("cluster = true\nnode_name = \"{name}\"\n")
}

pub struct Harness {
    // Dropped in this order: nodes and nginx before the database under them.
    pub nodes: Vec<Node>,
    pub nginx: Nginx,
    _dirs: TempDir,
    _pg: pg::Cluster,
}

/// A node's config: its own port and data directory, the shared database and cookie key.
fn node_config(dir: &Path, name: &str, port: u16, database_url: &str, secret: &str) -> String {
    format!(
        "{cluster}listen = \"127.0.0.1:{port}\"\n\
         data_dir = \"{data}\"\n\
         storage = \"postgres\"\n\
         database_url = \"{database_url}\"\n\
         secret_key = \"{secret}\"\n\
         password_iterations = 1000\n\
         poll_timeout = \"{poll}s\"\n\
         admins = [\"{ADMIN}\"]\n\
         trusted_proxies = [\"127.0.0.1\"]\n\
         [mail]\nprovider = \"log\"\n\
         [rate_limit]\nenabled = false\n",
        cluster = cluster_lines(name),
        data = dir.join("data").display(),
        poll = POLL_TIMEOUT.as_secs(),
    )
}

/// 32 random bytes as hex: one cookie signing key for every node, so any node accepts any cookie.
fn shared_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Harness {
    /// Three running nodes behind nginx; `None` (with a notice) without PostgreSQL or nginx.
    pub async fn start() -> Option<Harness> {
        Harness::start_nodes(3).await
    }

    pub async fn start_nodes(count: usize) -> Option<Harness> {
        let pg = pg::Cluster::start().await?;
        let database_url = pg.create_db("natter_cluster").await;
        let dirs = tempfile::tempdir().unwrap();
        let secret = shared_secret();
        let mut nodes = Vec::new();
        for i in 0..count {
            let name = format!("node{}", i + 1);
            let dir = dirs.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let config = dir.join("config.toml");
            std::fs::write(
                &config,
                node_config(&dir, &name, port, &database_url, &secret),
            )
            .unwrap();
            nodes.push(Node::new(&name, port, &config));
        }
        let upstreams: Vec<String> = nodes.iter().map(Node::addr).collect();
        let nginx = Nginx::start(&upstreams, PROXY_READ_TIMEOUT)?;
        // The first node alone creates the schema; the others then start together.
        tokio::task::block_in_place(|| {
            nodes[0].start();
            std::thread::scope(|s| {
                for node in nodes.iter_mut().skip(1) {
                    s.spawn(|| node.start());
                }
            });
        });
        Some(Harness {
            nodes,
            nginx,
            _dirs: dirs,
            _pg: pg,
        })
    }

    /// A new client (no cookies) talking to nginx.
    pub fn client(&self) -> Client {
        Client::new(&self.nginx.url(""))
    }

    /// `client` with its cookies, sent to node `i` directly.
    pub fn on(&self, client: &Client, i: usize) -> Client {
        client.on(&self.nodes[i].url(""))
    }

    /// kill -9 node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGTERM node `i` and wait for its clean exit.
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        tokio::task::block_in_place(|| node.stop());
    }

    /// Starts node `i` again on its config and port.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        tokio::task::block_in_place(|| node.start());
    }

    /// The activation link printed by whichever node handled the registration.
    pub async fn activation_link(&self, user: &str) -> String {
        for _ in 0..300 {
            if let Some(link) = self.nodes.iter().find_map(|n| n.activation_link(user)) {
                return link;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no node printed an activation link for {user}");
    }

    /// Registers `name` through `client`, follows the activation link, signs in.
    pub async fn register(&self, client: &Client, name: &str) {
        let body =
            json!({ "user": name, "email": format!("{name}@example.org"), "password": PASSWORD });
        client.post("/api/register", body).await.ok("register");
        let link = self.activation_link(name).await;
        let path = &link[link.find("/api/").expect("a link to /api/")..];
        let verified = client.get(path).await;
        assert_eq!(verified.status, 200, "verify {name}");
        client
            .post(
                "/api/authorize",
                json!({ "user": name, "password": PASSWORD }),
            )
            .await
            .ok("authorize");
    }

    /// A registered, signed-in client talking to nginx.
    pub async fn registered(&self, name: &str) -> Client {
        let client = self.client();
        self.register(&client, name).await;
        client
    }

    /// A guest client talking to nginx.
    pub async fn guest(&self, name: &str) -> Client {
        let client = self.client();
        client.guest(name).await;
        client
    }
}
