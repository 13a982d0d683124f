//! packaging/compose.yaml: natter built from the Containerfile beside PostgreSQL 17, and every
//! variable it gives natter one that natter reads, as the binary itself (`check-config`) shows.

use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(packaging().join("compose.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// A service's secrets by name (short form or `source:`).
fn secret_names(service: &Value) -> Vec<&str> {
    service["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().or_else(|| s["source"].as_str()).unwrap())
        .collect()
}

#[test]
fn compose_builds_natter_from_the_containerfile_beside_postgres_17() {
    let compose = compose();
    let natter = &compose["services"]["natter"];
    let context = packaging().join(natter["build"]["context"].as_str().unwrap());
    let dockerfile = natter["build"]["dockerfile"].as_str().unwrap();
    assert!(
        context.join(dockerfile).is_file(),
        "{context:?} {dockerfile}"
    );
    assert_eq!(natter["read_only"].as_bool(), Some(true));
    // The commands that only read copy the database there.
    assert_eq!(strings(&natter["tmpfs"]), ["/tmp"]);
    assert_eq!(strings(&natter["volumes"]), ["natter-data:/var/lib/natter"]);
    assert_eq!(strings(&natter["ports"]), ["8080:8080"]);
    assert_eq!(
        natter["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );

    let postgres = &compose["services"]["postgres"];
    assert_eq!(
        postgres["image"].as_str(),
        Some("docker.io/library/postgres:17")
    );
    assert_eq!(
        strings(&postgres["volumes"]),
        ["postgres-data:/var/lib/postgresql/data"]
    );
    assert!(postgres["healthcheck"]["test"].is_sequence());

    // Every named volume and secret a service uses is declared, and secrets come from files.
    for volume in ["natter-data", "postgres-data"] {
        assert!(compose["volumes"].get(volume).is_some(), "{volume}");
    }
    for service in [natter, postgres] {
        for secret in secret_names(service) {
            let file = compose["secrets"][secret]["file"].as_str();
            assert!(
                file.is_some_and(|f| f.starts_with("./secrets/")),
                "{secret}"
            );
        }
    }
    // The database natter's URL names is the one the postgres service creates.
    let env = &postgres["environment"];
    assert_eq!(env["POSTGRES_USER"].as_str(), Some("natter"));
    assert_eq!(env["POSTGRES_DB"].as_str(), Some("natter"));
    let header = std::fs::read_to_string(packaging().join("compose.yaml")).unwrap();
    assert!(
        header.contains("postgres://natter:%s@postgres:5432/natter"),
        "the recipe for the database_url secret"
    );
}

/// `natter check-config` with these variables only, in an empty directory: its output, which
/// must be a success.
fn check_config(env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .arg("check-config")
        .env_clear()
        .envs(env)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config with {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `ENV` lines of the Containerfile's runtime stages, as `NAME=value` pairs.
fn containerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile"))
        .unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn every_variable_compose_and_the_image_give_natter_is_one_natter_reads() {
    let compose = compose();
    let natter = &compose["services"]["natter"];
    let secrets = secret_names(natter);
    let files = tempfile::tempdir().unwrap();
    let mut env = BTreeMap::new();
    for (name, value) in natter["environment"].as_mapping().unwrap() {
        let (name, value) = (name.as_str().unwrap(), value.as_str().unwrap());
        let value = match name.strip_suffix("_FILE") {
            // A secret file at /run/secrets/<a secret of this service>, stood in for by a file here.
            Some(_) => {
                let secret = value.strip_prefix("/run/secrets/").unwrap();
                assert!(secrets.contains(&secret), "{name} names {secret}");
                let path = files.path().join(secret);
                let sample = match secret {
                    "database_url" => "postgres://natter:pw@postgres:5432/natter?sslmode=disable",
                    _ => "0123456789abcdef0123456789abcdef0123456789abcdef",
                };
                std::fs::write(&path, sample).unwrap();
                path.display().to_string()
            }
            None => value.to_owned(),
        };
        env.insert(name.to_owned(), value);
    }
    env.extend(containerfile_env());
    assert!(env.len() >= 4, "{env:?}");

    // With all of them natter starts (an unknown NATTER_ key would stop it); without any one of
    // them its effective config differs, so natter reads each.
    let all = check_config(&env);
    assert!(all.contains("data_dir = \"/var/lib/natter\""), "{all}");
    assert!(all.contains("\n# secret_key = \"<redacted>\""), "{all}");
    assert!(all.contains("\n# database_url = \"<redacted>\""), "{all}");
    for name in env.keys() {
        let mut without = env.clone();
        without.remove(name);
        assert_ne!(
            check_config(&without),
            all,
            "natter's config does not change with {name}"
        );
    }
}
