//! Connecting to PostgreSQL: the connection string, TLS as libpq does it (`prefer` tries it
//! first, `require` insists and checks the certificate), and a name for the database that holds
//! no password.

use super::conninfo;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

/// A parsed connection string: tokio-postgres's settings plus what it does not read itself.
#[derive(Debug, Clone)]
pub struct Target {
    pub postgres: Config,
    /// `sslrootcert`: the certificates that sign the server's (instead of the system's roots).
    pub root_cert: Option<PathBuf>,
}

/// Used when the connection string sets no `connect_timeout`: a dead host must not stall the
/// worker for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection string that does not parse. Neither kind repeats the string (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Neither a URL nor `key=value` pairs.
    #[error(transparent)]
    Unparsable(#[from] conninfo::Unparsable),
    /// tokio-postgres refused it (an unknown key, a bad value).
    #[error("the PostgreSQL connection string does not parse: {0}")]
    Rejected(tokio_postgres::Error),
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS setup failed: {0}")]
    Tls(rustls::Error),
    #[error("cannot read sslrootcert {}: {problem}", path.display())]
    RootCert {
        path: PathBuf,
        problem: RootCertProblem,
    },
    #[error("sslmode=require, but no trusted root certificates were found")]
    NoRoots,
    /// Refused, unreachable, the TLS handshake, authentication.
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// What is wrong with the `sslrootcert` file.
#[derive(Debug, thiserror::Error)]
pub enum RootCertProblem {
    #[error("{0}")]
    Read(rustls::pki_types::pem::Error),
    #[error("{0}")]
    Rejected(rustls::Error),
    #[error("no certificate in it")]
    Empty,
}

/// A tokio-postgres error as natter logs it: see `describe_error`.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_error(&self.0))
    }
}

// No source: the message already holds the whole chain.
impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

/// Parses a `postgres://` URL or a `key=value` string.
pub fn parse(url: &str) -> Result<Target, UrlError> {
    let (rest, root_cert) = conninfo::take(url, "sslrootcert")?;
    let mut config: Config = rest.parse().map_err(UrlError::Rejected)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(Target {
        postgres: config,
        root_cert: root_cert.map(PathBuf::from),
    })
}

/// Whether every host is a Unix socket or a loopback address.
fn is_local(config: &Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// A warning when the mirror is reached over the network without `sslmode=require`: the
/// traffic (password hashes, messages) could be read or changed on the way.
pub fn exposure_warning(target: &Target) -> Option<String> {
    let config = &target.postgres;
    if is_local(config) || config.get_ssl_mode() == SslMode::Require {
        return None;
    }
    let mode = match config.get_ssl_mode() {
        SslMode::Disable => "disable",
        _ => "prefer",
    };
    Some(format!(
        "the PostgreSQL mirror {} is reached over the network with sslmode={mode}: its traffic \
         (password hashes, messages) can be read or changed on the way; add sslmode=require to \
         database_url (and sslrootcert=PATH for a private certificate authority)",
        describe(target)
    ))
}

/// "host:port/dbname", to log and to tell one mirror database from another.
pub fn describe(target: &Target) -> String {
    let config = &target.postgres;
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

/// Connects as libpq does: `disable` in plain text; `prefer` (the default) tries TLS first,
/// without checking the certificate unless `sslrootcert` is given, and falls back to plain text
/// when the server has no TLS or the TLS attempt fails; `require` insists on TLS with a certificate signed by
/// `sslrootcert` or the system's trusted roots. The connection runs on its own task; the client
/// reports it closed when that task ends.
pub async fn connect(target: &Target) -> Result<Client, ConnectError> {
    let config = &target.postgres;
    match config.get_ssl_mode() {
        SslMode::Disable => connect_plain(config).await,
        SslMode::Require => connect_tls(config, tls_config(target, true)?).await,
        _ => match connect_tls(config, tls_config(target, false)?).await {
            Ok(client) => Ok(client),
            // As libpq: a failed TLS attempt (a broken handshake, a server refusing TLS
            // clients) is tried again in plain text.
            Err(ConnectError::Postgres(tls_error)) => {
                log::debug!("PostgreSQL over TLS failed, trying plain text: {tls_error}");
                let mut plain = config.clone();
                plain.ssl_mode(SslMode::Disable);
                connect_plain(&plain).await
            }
            Err(other) => Err(other),
        },
    }
}

async fn connect_tls(config: &Config, tls: rustls::ClientConfig) -> Result<Client, ConnectError> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, connection) = config.connect(tls).await.map_err(PgError)?;
    tokio::spawn(run(connection));
    Ok(client)
}

async fn connect_plain(config: &Config) -> Result<Client, ConnectError> {
    let (client, connection) = config.connect(NoTls).await.map_err(PgError)?;
    tokio::spawn(run(connection));
    Ok(client)
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
fn describe_error(e: &tokio_postgres::Error) -> String {
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
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The TLS settings: certificates checked against `sslrootcert` or the system's roots, or (for
/// `prefer` without `sslrootcert`, as libpq) encryption without checking who answers.
pub(crate) fn tls_config(
    target: &Target,
    verify: bool,
) -> Result<rustls::ClientConfig, ConnectError> {
    // Named explicitly: other crates in the build may enable a second rustls provider.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Tls)?;
    if !verify && target.root_cert.is_none() {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::unverified::Unverified(provider)))
            .with_no_client_auth());
    }
    Ok(builder
        .with_root_certificates(roots(target)?)
        .with_no_client_auth())
}

/// `sslrootcert`'s certificates, else the system's trusted roots.
fn roots(target: &Target) -> Result<rustls::RootCertStore, ConnectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &target.root_cert {
        let failed = |problem| ConnectError::RootCert {
            path: path.clone(),
            problem,
        };
        let read = |e| failed(RootCertProblem::Read(e));
        for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
            let cert = cert.map_err(read)?;
            roots
                .add(cert)
                .map_err(|e| failed(RootCertProblem::Rejected(e)))?;
        }
        if roots.is_empty() {
            return Err(failed(RootCertProblem::Empty));
        }
        return Ok(roots);
    }
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not stop the others.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ConnectError::NoRoots);
    }
    Ok(roots)
}
