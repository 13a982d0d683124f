//! The servers under test: the release `natter` as a child process with its own data directory,
//! and the baseline (this bench binary re-run as a bare warp server), plus `/proc` readings.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Environment variable that turns this binary into the baseline server.
pub const BASELINE_ENV: &str = "BENCH_BASELINE_SERVER";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line after the listening line.
    pub log: Log,
    pub dir: Option<tempfile::TempDir>,
    pub config: Option<PathBuf>,
}

/// The server's stderr lines the bench keeps.
type Log = Arc<Mutex<Vec<String>>>;

/// Spawns `cmd`, waits for "listening on ADDR" on its stderr and keeps reading the rest.
fn spawn(mut cmd: Command) -> Result<(Child, SocketAddr, Log), String> {
    // natter refuses unknown NATTER_* variables; none of the bench's may reach it.
    for (key, _) in std::env::vars() {
        if key.starts_with("NATTER_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let addr = lines.by_ref().map_while(Result::ok).find_map(|l| {
        let found = l
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse::<SocketAddr>().ok());
        seen.push(l);
        found
    });
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(seen.join("\n"));
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            // Keep what the bench reads (warnings, activation links), not the access log.
            if !line.contains(" INFO ") || line.contains("activation link") {
                sink.lock().unwrap().push(line);
            }
        }
    });
    Ok((child, addr, log))
}

impl Server {
    /// Starts `natter --dev` with the bench defaults plus `extra` top-level lines and `tables`.
    pub fn natter(extra: &str, tables: &str) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = dir.path().join("natter.toml");
        // Top-level keys to try without editing the benchmark, e.g. BENCH_NATTER_CONFIG='event_batch_delay = "0s"'.
        let tried = std::env::var("BENCH_NATTER_CONFIG").unwrap_or_default();
        let extra = format!("{extra}\n{tried}");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nmax_connections = 30000\n\
             max_connections_per_ip = 30000\n{extra}\n[rate_limit]\nenabled = false\n{tables}\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let mut server = Server::natter_at(&config)?;
        server.dir = Some(dir);
        Ok(server)
    }

    /// Starts natter on an existing config (a restart on the same data directory).
    pub fn natter_at(config: &std::path::Path) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter"));
        cmd.arg("--dev").arg("--config").arg(config);
        let (child, addr, log) = spawn(cmd)?;
        Ok(Server {
            child,
            addr,
            log,
            dir: None,
            config: Some(config.to_owned()),
        })
    }

    /// The baseline: this binary again, as a bare warp server.
    pub fn baseline() -> Server {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.env(BASELINE_ENV, "1");
        let (child, addr, log) = spawn(cmd).expect("baseline starts");
        Server {
            child,
            addr,
            log,
            dir: None,
            config: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time of the server so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// How long its threads have waited for a core so far.
    pub fn run_queue_wait(&self) -> Duration {
        run_queue_wait(self.pid())
    }

    /// The highest RSS the server has had (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Lines of its log that contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// How long the threads of `pid` have waited in the run queue for a core (`/proc/PID/task/*/schedstat`,
/// second field): time the process was ready to run but another process had the cores.
pub fn run_queue_wait(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// The baseline server: `GET /poll` waits on a `tokio::sync::broadcast` for one event,
/// `POST /publish` broadcasts its body, `GET /hello` answers "hello".
pub fn run_baseline() {
    use warp::Filter;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (tx, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(1024);
        let poll_tx = tx.clone();
        let poll = warp::path("poll").and(warp::get()).then(move || {
            let mut rx = poll_tx.subscribe();
            async move {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Ok(event)) => warp::http::Response::new(event),
                    _ => warp::http::Response::new(bytes::Bytes::new()),
                }
            }
        });
        let publish = warp::path("publish")
            .and(warp::post())
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                let _ = tx.send(body);
                ""
            });
        let hello = warp::path("hello").map(|| "hello");
        let routes = poll.or(publish).or(hello);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        eprintln!(
            "baseline listening on {}",
            listener.local_addr().expect("addr")
        );
        warp::serve(routes).incoming(listener).run().await;
    });
}

/// CPU time of `pid` and its direct children (nginx's workers, PostgreSQL's backends).
#[cfg(feature = "pg")]
pub fn tree_cpu_time(pid: u32) -> Duration {
    let children: Duration = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .map(cpu_time)
        .sum();
    cpu_time(pid) + children
}

#[cfg(feature = "pg")]
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fourth field of the whole line: the second after the parenthesised name.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The PostgreSQL server process listening on `port` (its `-p PORT` argument).
#[cfg(feature = "pg")]
pub fn postmaster_pid(port: u16) -> Option<u32> {
    let wanted = format!("\0-p\0{port}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&wanted))
        })
}
