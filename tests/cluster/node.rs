//! One natter node: a child process on a port chosen up front, so that it can be killed and
//! started again where nginx expects it. Its stderr is kept across restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Node {
    pub name: String,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
    /// Every stderr line of every run of this node.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Node {
    /// A node that will run on `config` at `port`; not started yet.
    pub fn new(name: &str, port: u16, config: &Path) -> Node {
        Node {
            name: name.to_owned(),
            port,
            config: config.to_owned(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Starts the process and waits for its "listening on" line (on our port).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--dev")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = self.name.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
                }
                if std::env::var_os("TEST_CLUSTER_LOG").is_some() {
                    eprintln!("[{name}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => assert_eq!(addr, self.addr(), "{} listens where nginx sends", self.name),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "{} did not start ({status}): {:#?}",
                    self.name,
                    self.log.lock().unwrap()
                );
            }
        }
        self.child = Some(child);
    }

    /// kill -9: no shutdown work at all.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the node runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit, which must be clean (0) and within 10 s.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the node runs");
        // SAFETY: a plain signal to our own child, which has not been waited for yet.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{} stopped cleanly", self.name);
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not stop within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many request log lines start with `prefix` (say `GET /healthz 200`).
    pub fn requests(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(prefix))
            .count()
    }

    /// The activation link the log mailer printed for `user`, if it did.
    pub fn activation_link(&self, user: &str) -> Option<String> {
        let needle = format!("/api/verifyEmail/{user}/");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle))
            .find_map(|l| l.split("activation link: ").nth(1))
            .map(|link| link.trim().to_owned())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
