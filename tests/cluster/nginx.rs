//! A real nginx in front of the nodes: round robin (no ip_hash, nothing sticky), long polls held
//! longer than natter's poll_timeout, and requests a dead node refused sent to the next one.
//! It runs as the current user with everything (config, logs, pid, temp files) in its own directory.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

/// The response header naming the node that answered (nginx's `$upstream_addr`).
pub const UPSTREAM_HEADER: &str = "x-upstream";

/// The nginx binary: `TEST_NGINX_BIN`, else `nginx` on PATH or in /usr/sbin.
fn find_nginx() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TEST_NGINX_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|bin| bin.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// nginx.conf for `port` in front of `upstreams` (host:port each), everything under `dir`.
pub fn config(dir: &Path, port: u16, upstreams: &[String], read_timeout: Duration) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    // As root nginx would hand its workers to `nobody`, who cannot use this directory.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream natter {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://natter;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Longer than poll_timeout: a parked poll is natter's to end, not nginx's.
            proxy_read_timeout {read}s;
            proxy_connect_timeout 2s;
            # A node that refuses or dies: the request goes to the next one.
            proxy_next_upstream error timeout;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
",
        read = read_timeout.as_secs()
    )
}

impl Nginx {
    /// A running nginx in front of `upstreams`; `None` (with a notice) when nginx is not
    /// installed, a failure instead with `TEST_REQUIRE_NGINX=1`.
    pub fn start(upstreams: &[String], read_timeout: Duration) -> Option<Nginx> {
        let Some(bin) = find_nginx() else {
            if std::env::var("TEST_REQUIRE_NGINX").is_ok_and(|v| v == "1") {
                panic!(
                    "TEST_REQUIRE_NGINX=1 but no nginx binary was found (apt-get install nginx)"
                );
            }
            // Written to stderr directly: eprintln! would be swallowed by the test harness.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"NOTICE: skipping a cluster test: no nginx (TEST_NGINX_BIN, PATH, /usr/sbin) \
                  (install nginx, or set TEST_NGINX_BIN)\n",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = crate::node::free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstreams, read_timeout)).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { port, child, dir };
        nginx.wait_listening();
        Some(nginx)
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited ({status}): {}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: it takes its workers along (a SIGKILL would leave them serving).
        // SAFETY: a plain signal to our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
