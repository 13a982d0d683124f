//! A real nginx in front of the nodes of workload 13, configured as docs/operations.md ("Running
//! several nodes") advises: round robin, kept-alive upstream connections, long polls held longer
//! than natter's poll_timeout. It runs as the current user with everything in its own directory.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

/// `BENCH_NGINX_BIN`, else `nginx` on PATH or in /usr/sbin.
fn find_nginx() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("BENCH_NGINX_BIN") {
        return Some(PathBuf::from(bin)).filter(|b| b.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|bin| bin.is_file())
}

fn config(dir: &Path, port: u16, upstreams: &[SocketAddr]) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    // SAFETY: geteuid has no preconditions. As root nginx would hand its workers to `nobody`.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    // Each listener holds a long poll and a keepalive connection, each proxied: four sockets.
    format!(
        "{user}worker_processes 1;
worker_rlimit_nofile 65536;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream natter {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://natter;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 75s;
            proxy_next_upstream error timeout http_503;
        }}
    }}
}}
"
    )
}

impl Nginx {
    /// A running nginx in front of `upstreams`, or why not (no nginx installed: `Ok(None)`).
    pub fn start(upstreams: &[SocketAddr]) -> Result<Option<Nginx>, String> {
        let Some(bin) = find_nginx() else {
            return Ok(None);
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstreams)).map_err(|e| e.to_string())?;
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
            .map_err(|e| format!("nginx: {e}"))?;
        let mut nginx = Nginx {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(nginx.addr).is_err() {
            let log = || std::fs::read_to_string(nginx._dir.path().join("error.log"));
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!(
                    "nginx exited ({status}): {}",
                    log().unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen: {}",
                    log().unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(nginx))
    }

    /// nginx's own CPU time so far (master and its worker).
    pub fn cpu(&self) -> Duration {
        crate::servers::tree_cpu_time(self.child.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: it takes its worker along (a SIGKILL would leave it serving).
        // SAFETY: a plain signal to our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
