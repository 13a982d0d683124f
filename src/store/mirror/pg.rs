//! Connecting to PostgreSQL: the connection string, TLS when it asks for it, and a name for the
//! database that holds no password.

use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

/// Used when the connection string sets no `connect_timeout`: a dead host must not stall the
/// worker for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a `postgres://` URL or a `key=value` string. The error never repeats the string (it
/// may hold a password).
pub fn parse(url: &str) -> Result<Config, String> {
    let mut config: Config = url
        .parse()
        .map_err(|e| format!("the PostgreSQL connection string does not parse: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// "host:port/dbname", to log and to tell one mirror database from another.
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!(
        "{}:{}/{db}",
        if hosts.is_empty() {
            "localhost".into()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        }
    )
}

/// Connects, with rustls when the string says `sslmode=require` (the server certificate is
/// checked against the system's trusted roots), in plain text otherwise. The connection runs
/// on its own task; the client reports it closed when that task ends.
pub async fn connect(config: &Config) -> Result<Client, String> {
    if config.get_ssl_mode() == SslMode::Require {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
        let (client, connection) = config.connect(tls).await.map_err(describe_error)?;
        tokio::spawn(run(connection));
        Ok(client)
    } else {
        let (client, connection) = config.connect(NoTls).await.map_err(describe_error)?;
        tokio::spawn(run(connection));
        Ok(client)
    }
}

async fn run<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        log::debug!("PostgreSQL connection ended: {e}");
    }
}

/// The full error chain: tokio-postgres puts the useful part (refused, TLS) in the source.
pub fn describe_error(e: tokio_postgres::Error) -> String {
    // A server error's DETAIL can quote a row (an email, a hash): only its message goes to the log.
    if let Some(db) = e.as_db_error() {
        return format!(
            "db error: {}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // One unreadable system certificate must not stop the others.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("sslmode=require, but no trusted root certificates were found".into());
    }
    // Named explicitly: other crates in the build may enable a second rustls provider.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
