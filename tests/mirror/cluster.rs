//! A throwaway PostgreSQL cluster on a free loopback port, trust auth, stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use tempfile::TempDir;

pub struct Cluster {
    bin: PathBuf,
    dir: TempDir,
    pub port: u16,
    /// initdb refuses root: as root the cluster runs as the `postgres` user.
    as_postgres: bool,
    /// Whether commits reach the disk (`fsync`); off for tests, on for benchmarks.
    fsync: bool,
}

/// The newest installed PostgreSQL's bin directory.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TEST_POSTGRES_BIN") {
        let bin = PathBuf::from(dir);
        return bin.join("initdb").exists().then_some(bin);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// A running cluster, or `None` (with a printed notice) when PostgreSQL is not installed.
    pub async fn start() -> Option<Cluster> {
        Self::start_with(false).await
    }

    /// As `start`, with commits flushed to disk as in production (the load benchmark's).
    #[allow(dead_code)]
    pub async fn start_durable() -> Option<Cluster> {
        Self::start_with(true).await
    }

    async fn start_with(fsync: bool) -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("TEST_REQUIRE_POSTGRES=1 but no PostgreSQL binaries were found");
            }
            // Written to stderr directly: eprintln! would be swallowed by the test harness.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"NOTICE: skipping a PostgreSQL test: no initdb under /usr/lib/postgresql \
                  (install postgresql, or set TEST_POSTGRES_BIN)\n",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            run_ok(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let port = free_port();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
            fsync,
        };
        let data = cluster.data();
        cluster.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth=trust",
                "-N",
            ],
        );
        cluster.start_server();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        command.args(args).current_dir(self.dir.path());
        run_ok(&mut command);
    }

    /// Starts (again) on the same port.
    pub fn start_server(&self) {
        let data = self.data();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}{}",
            self.port,
            self.dir.path().display(),
            if self.fsync { "" } else { " -c fsync=off" }
        );
        self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                self.dir.path().join("server.log").to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop_server(&self) {
        let data = self.data();
        self.pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Turns TLS on with a certificate for 127.0.0.1 signed by a new certificate authority;
    /// returns the authority's certificate (PEM file).
    pub fn enable_tls(&self) -> PathBuf {
        let dir = self.dir.path();
        let ssl = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        if self.as_postgres {
            run_ok(
                Command::new("chown")
                    .args(["postgres", "server.key", "server.crt"])
                    .current_dir(dir),
            );
        }
        run_ok(
            Command::new("chmod")
                .args(["600", "server.key"])
                .current_dir(dir),
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
            dir.display()
        ));
        std::fs::write(&conf, text).unwrap();
        self.stop_server();
        self.start_server();
        dir.join("ca.pem")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database and returns its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let admin = self.client("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.url(name)
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Cluster {
    /// Stops the server at once (also what dropping does).
    pub fn stop(&self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let _ = command
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
