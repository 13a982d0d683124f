//! One test's containers, data volume, cookie key and config file: started as docs/container.md
//! says, with the sandbox's runtime limits, and removed again however the test ends.

use crate::image::IMAGE;
use crate::podman::Podman;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the cookie key is mounted, as compose mounts its file secrets.
const KEY_TARGET: &str = "/run/secrets/natter_secret_key";

/// The names of what a test made, removed on drop.
pub struct Setup<'a> {
    pub podman: &'a Podman,
    /// `natter-test-PID`: the prefix of every name here.
    pub tag: String,
    pub volume: String,
    pub port: u16,
    config: PathBuf,
    key: PathBuf,
    /// Secret files made after the key.
    files: Vec<PathBuf>,
    /// Volumes made after the data volume.
    volumes: Vec<String>,
    containers: Vec<String>,
}

impl<'a> Setup<'a> {
    /// A new volume, a cookie key file readable by natter's user alone, a config file for
    /// /etc/natter/config.toml and a free port (the containers share the host's network).
    pub fn new(podman: &'a Podman, dir: &std::path::Path, config: &str) -> Setup<'a> {
        let tag = format!("natter-test-{}", std::process::id());
        let volume = format!("{tag}-data");
        std::fs::create_dir_all(dir).unwrap();
        let config_path = dir.join(format!("{tag}.toml"));
        std::fs::write(&config_path, config).unwrap();
        std::fs::set_permissions(&config_path, Permissions::from_mode(0o644)).unwrap();
        let key = secret_file(&dir.join(format!("{tag}.key")), &random_key());
        let setup = Setup {
            podman,
            tag,
            volume,
            port: free_port(),
            config: config_path,
            key,
            files: Vec::new(),
            volumes: Vec::new(),
            containers: Vec::new(),
        };
        podman.ok(&["volume", "create", &setup.volume]);
        setup
    }

    /// The `podman run` options every natter container gets here: read-only root, the data volume,
    /// the config file, the key file, limits the sandbox accepts. (podman 4.3 cannot mount a
    /// `--secret` file into a read-only container; a bound file is what compose mounts anyway.)
    fn run_options(&self) -> Vec<String> {
        let config = format!("{}:/etc/natter/config.toml:ro", self.config.display());
        let key = format!("{}:{KEY_TARGET}:ro", self.key.display());
        [
            "--read-only",
            "--network=host",
            "--ulimit=nofile=4096:4096",
            "--ulimit=nproc=4096:4096",
            "--volume",
            &format!("{}:/var/lib/natter", self.volume),
            "--volume",
            &config,
            "--volume",
            &key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Another empty volume, `natter-test-PID-SUFFIX`.
    pub fn new_volume(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.tag);
        self.podman.ok(&["volume", "create", &name]);
        self.volumes.push(name.clone());
        name
    }

    /// A file of this test readable by natter's user alone, to mount as a secret: the
    /// `--volume` option that mounts it at `target`.
    pub fn secret(&mut self, name: &str, content: &str, target: &str) -> String {
        let dir = self.config.parent().unwrap();
        let path = secret_file(&dir.join(format!("{}.{name}", self.tag)), content);
        let option = format!("--volume={}:{target}:ro", path.display());
        self.files.push(path);
        option
    }

    /// Starts a natter container named `name` serving on [`Setup::port`], with `options` added
    /// to `podman run`'s, and waits until its /healthz answers 200.
    pub fn start(&mut self, name: &str, env: &[(&str, &str)], options: &[String]) {
        let mut args: Vec<String> = vec!["run".into(), "--detach".into(), "--name".into()];
        args.push(name.into());
        self.containers.push(name.into());
        args.extend(self.run_options());
        args.extend(options.iter().cloned());
        args.extend(["--env".into(), format!("PORT={}", self.port)]);
        args.extend(["--env".into(), format!("SECRET_KEY_FILE={KEY_TARGET}")]);
        for (key, value) in env {
            args.extend(["--env".into(), format!("{key}={value}")]);
        }
        args.push(IMAGE.into());
        self.podman.ok(&args);
        self.wait_ready(name);
    }

    /// Runs a one-shot natter command in a throwaway container on the same volume (the server
    /// stopped): its standard output.
    pub fn offline(&self, command: &[&str]) -> String {
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(self.run_options());
        args.push(IMAGE.into());
        args.extend(command.iter().map(|s| s.to_string()));
        self.podman.ok(&args)
    }

    fn wait_ready(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("127.0.0.1:{}", self.port);
        loop {
            if let Ok(body) = healthz(&url) {
                assert!(body.contains(r#""storage":"ok""#), "{body}");
                return;
            }
            let running = self
                .podman
                .ok(&["inspect", "--format", "{{.State.Running}}", name]);
            assert!(
                running == "true" && Instant::now() < deadline,
                "natter in {name} did not come up (running: {running}):\n{}",
                self.podman.logs(name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `podman stop` (SIGTERM, SIGKILL after `grace`): how long it took.
    pub fn stop(&self, name: &str, grace: Duration) -> Duration {
        let started = Instant::now();
        self.podman
            .ok(&["stop", "--time", &grace.as_secs().to_string(), name]);
        started.elapsed()
    }

    pub fn exit_code(&self, name: &str) -> i32 {
        self.podman
            .ok(&["inspect", "--format", "{{.State.ExitCode}}", name])
            .parse()
            .unwrap()
    }
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        for name in &self.containers {
            self.podman.quietly(&["rm", "--force", "--time", "0", name]);
        }
        for volume in self.volumes.iter().chain([&self.volume]) {
            self.podman.quietly(&["volume", "rm", "--force", volume]);
        }
        for file in self.files.iter().chain([&self.config, &self.key]) {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// GET /healthz with a plain socket: the body of a 200.
fn healthz(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(answer)
    } else {
        Err(answer)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `content` to `path`, mode 0400, owned by natter's uid and gid in the image.
fn secret_file(path: &std::path::Path, content: &str) -> PathBuf {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(path, Some(10001), Some(10001)).unwrap();
    path.to_owned()
}

/// 48 random bytes as hex: a cookie key well over natter's 32-byte minimum.
fn random_key() -> String {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
