//! TLS for both legs with rustls.
//!
//! Session reuse is what this module is for. Strict FTPS servers (vsftpd
//! `require_ssl_reuse`, ProFTPD, FileZilla Server) accept a data connection only
//! if its TLS session resumes the control connection's. So each control
//! connection gets configs of its own:
//! - client leg: a clone of the listener's `ServerConfig` with its own small
//!   session cache and no ticketer, so a data connection can only resume a
//!   session minted on this control connection; `handshake_kind()` proves it.
//! - backend leg: a clone of the backend `ClientConfig` with its own session
//!   store, used for the control connection and every data connection, so they
//!   resume each other towards the backend.

pub mod certs;
pub mod read_ahead;
pub mod route;
pub mod stream;
pub mod verify;

pub use crate::tls_options::{parse_fingerprint, BackendTlsOptions, BackendVerify, ServerTlsOptions, TlsVersion};

use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::Path;
use std::sync::{Arc, RwLock};
use thiserror::Error;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Sessions one client control connection may have cached at once: the control
/// session plus those minted by recent data connections.
const CLIENT_SESSION_CACHE: usize = 32;
/// TLS 1.3 tickets sent per handshake that sends any (control, downloads).
/// Clients that use each ticket once need one per data connection; 8 is as
/// many as a rustls client keeps per server.
const CLIENT_TLS13_TICKETS: usize = 8;
/// Backend sessions kept per backend control connection (TLS 1.3 tickets are
/// single-use and arrive a few per connection).
const BACKEND_SESSION_CACHE: usize = 16;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{setting}: {inner}")]
    Setting { setting: &'static str, inner: Box<TlsError> },
    #[error("tls.cert {cert} and tls.key {key} do not belong together: {message}")]
    KeyMismatch { cert: String, key: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientVerifier(String),
    #[error("backend certificate fingerprint {0:?}: expected 64 hex digits (SHA-256), colons allowed")]
    Fingerprint(String),
    #[error("backend server name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("no trusted roots for the backend: system store empty and no CA file given")]
    NoRoots,
    #[error("unknown cipher suite {0:?}; known: {1}")]
    UnknownCipher(String, String),
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = vec![];
    if min <= TlsVersion::V13 && max >= TlsVersion::V13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::V12 && max >= TlsVersion::V12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The crypto provider restricted to the named cipher suites (rustls names,
/// e.g. `TLS13_AES_256_GCM_SHA384`), in the given order of preference. An empty
/// list keeps rustls' defaults.
pub fn provider_with_ciphers(names: &[String]) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(Arc::new(p));
    }
    let all = p.cipher_suites.clone();
    let name_of = |c: &rustls::SupportedCipherSuite| format!("{:?}", c.suite());
    p.cipher_suites = names
        .iter()
        .map(|n| {
            all.iter().find(|c| name_of(c).eq_ignore_ascii_case(n)).copied().ok_or_else(|| {
                TlsError::UnknownCipher(n.clone(), all.iter().map(name_of).collect::<Vec<_>>().join(", "))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(p))
}

/// Under systemd, `LoadCredential=server.key:/etc/ftpgate/certs/server.key`
/// hands a root-owned 0600 file to the service's dynamic user: ftpgate reads
/// a certificate or key from `$CREDENTIALS_DIRECTORY` when a credential of
/// the same file name is there, so the configuration keeps naming the file
/// where it lives.
pub fn credential_or(path: &Path) -> std::borrow::Cow<'_, Path> {
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .zip(path.file_name())
        .map(|(dir, name)| Path::new(&dir).join(name))
        .filter(|p| p.is_file());
    match from_credentials {
        Some(p) => std::borrow::Cow::Owned(p),
        None => std::borrow::Cow::Borrowed(path),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = &credential_or(path);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = &credential_or(path);
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| file_err(path, e))?;
    }
    Ok(roots)
}

/// One client session's TLS server configurations; each resumes the others'
/// sessions.
#[derive(Clone)]
pub struct SessionAcceptors {
    pub control: TlsAcceptor,
    /// For downloads and listings: the client reads the connection to its
    /// end, tickets included.
    pub data_with_tickets: Arc<ServerConfig>,
    /// For uploads, which never read what the server sends.
    pub data_without_tickets: Arc<ServerConfig>,
}

impl SessionAcceptors {
    /// The configuration for a data connection: TLS 1.3 tickets only where
    /// the client reads them. An uploading client never reads its data
    /// connection, so tickets sent there sit unread, and closing a socket
    /// with unread bytes sends a reset that discards whatever upload data the
    /// client's kernel had not delivered yet (lftp lost the end of uploads
    /// this way). A connection whose direction is not known yet is treated
    /// as an upload.
    ///
    /// The cost falls on clients that use each ticket once (rustls): they
    /// spend one per data connection and get new ones only from downloads
    /// and listings, so after 8 uploads in a row their next data connection
    /// cannot resume. Clients that present the control connection's session
    /// every time (lftp, FileZilla, Python's ftplib, curl 7/8 with OpenSSL)
    /// never run out. Sending tickets on uploads would not help the former
    /// anyway: they do not read them either.
    pub fn for_data(&self, download: bool) -> Arc<ServerConfig> {
        if download {
            Arc::clone(&self.data_with_tickets)
        } else {
            Arc::clone(&self.data_without_tickets)
        }
    }
}

/// The client leg's TLS server configuration. Reloadable: sessions keep the
/// configuration they started with, new sessions get the new one.
#[derive(Debug)]
pub struct ServerTls {
    options: ServerTlsOptions,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    pub fn load(options: ServerTlsOptions) -> Result<ServerTls, TlsError> {
        let config = Arc::new(build_server_config(&options)?);
        Ok(ServerTls { options, config: RwLock::new(config) })
    }

    /// Reads the certificate, key and CA files again. On error the old
    /// configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build_server_config(&self.options)?);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// TLS configurations for one client control connection and its data
    /// connections, with a session cache and a ticket key no other connection
    /// shares: a session or ticket minted here cannot be resumed anywhere else.
    /// Tickets matter: clients (lftp, Python with `session=`) resume the control
    /// session for every data connection, and a TLS 1.3 session held only in the
    /// cache is single-use, while a ticket under this session's own key can be
    /// presented again.
    pub fn for_session(&self) -> Result<SessionAcceptors, TlsError> {
        let base = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        let mut control = (*base).clone();
        control.session_storage = ServerSessionMemoryCache::new(CLIENT_SESSION_CACHE);
        control.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        control.send_tls13_tickets = CLIENT_TLS13_TICKETS;
        // Same cache and key, no tickets: see `SessionAcceptors::for_data`.
        let mut quiet = control.clone();
        quiet.send_tls13_tickets = 0;
        Ok(SessionAcceptors {
            data_with_tickets: Arc::new(control.clone()),
            control: TlsAcceptor::from(Arc::new(control)),
            data_without_tickets: Arc::new(quiet),
        })
    }

    pub fn mutual(&self) -> bool {
        self.options.client_ca.is_some()
    }
}

/// Says which setting named the file that failed.
fn in_setting<T>(setting: &'static str, r: Result<T, TlsError>) -> Result<T, TlsError> {
    r.map_err(|e| TlsError::Setting { setting, inner: Box::new(e) })
}

fn build_server_config(o: &ServerTlsOptions) -> Result<ServerConfig, TlsError> {
    let certs = in_setting("tls.cert (--cert)", load_certs(&o.cert))?;
    let key = in_setting("tls.key (--key)", load_key(&o.key))?;
    let builder = ServerConfig::builder_with_provider(provider_with_ciphers(&o.cipher_suites)?)
        .with_protocol_versions(&versions(o.min_version, TlsVersion::V13))?;
    let builder = match &o.client_ca {
        Some(ca) => {
            let roots = Arc::new(in_setting("tls.client_ca (--client-ca)", load_roots(ca))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // The base config never issues tickets; each session gets its own ticket key
    // in `for_session`.
    builder.with_single_cert(certs, key).map_err(|e| TlsError::KeyMismatch {
        cert: o.cert.display().to_string(),
        key: o.key.display().to_string(),
        message: e.to_string(),
    })
}

/// The backend leg's TLS client configuration.
#[derive(Debug)]
pub struct BackendTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl BackendTls {
    /// `host` is the backend address's host part, used as the server name
    /// unless overridden.
    pub fn build(o: &BackendTlsOptions, host: &str) -> Result<BackendTls, TlsError> {
        let name =
            o.server_name.clone().unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']').to_string());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions(TlsVersion::V12, o.max_version))?;
        let builder = match &o.verify {
            BackendVerify::SystemRoots => {
                let mut roots = RootCertStore::empty();
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TlsError::NoRoots);
                }
                builder.with_root_certificates(roots)
            }
            BackendVerify::CaFile(p) => {
                builder.with_root_certificates(in_setting("backend.ca (--backend-ca)", load_roots(p))?)
            }
            BackendVerify::Fingerprint(hex) => {
                let pin = parse_fingerprint(hex).ok_or_else(|| TlsError::Fingerprint(hex.clone()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verify::Pinned::new(Some(pin), provider())))
            }
            BackendVerify::Insecure => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verify::Pinned::new(None, provider())))
            }
        };
        let config = builder.with_no_client_auth();
        Ok(BackendTls { config: Arc::new(config), server_name })
    }

    /// A connector for one backend control connection and its data connections,
    /// sharing a session store of their own so data connections resume the
    /// control connection's session.
    pub fn for_session(&self) -> BackendSessionTls {
        let mut c = (*self.config).clone();
        c.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(BACKEND_SESSION_CACHE)));
        BackendSessionTls { connector: TlsConnector::from(Arc::new(c)), server_name: self.server_name.clone() }
    }
}

/// TLS towards the backend for one session.
#[derive(Clone)]
pub struct BackendSessionTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// True if the connection resumed an earlier session instead of a full handshake.
/// The negotiated protocol version as a metric label ("1.2", "1.3").
pub fn version_label(conn: &rustls::CommonState) -> &'static str {
    match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    }
}

pub fn resumed(conn: &rustls::CommonState) -> bool {
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// The names a client certificate carries: its subject common names and its
/// DNS and e-mail subject alternative names. Used to tie an FTP user name to
/// the certificate that authenticated the TLS connection.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return vec![] };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => names.push((*s).to_string()),
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_generated_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let who = certs::Holders { clients: &["alice".into()], connectors: &[] };
        certs::init(dir.path(), &["127.0.0.1".into()], who, false, certs::KeyType::Ecdsa).unwrap();
        let mut o = ServerTlsOptions {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: None,
            min_version: TlsVersion::V13,
            cipher_suites: vec!["tls13_chacha20_poly1305_sha256".into()],
        };
        assert!(ServerTls::load(o.clone()).is_ok());
        o.cipher_suites = vec!["TLS_NULL_WITH_NULL_NULL".into()];
        let err = ServerTls::load(o).unwrap_err().to_string();
        assert!(err.contains("TLS_NULL_WITH_NULL_NULL") && err.contains("TLS13_AES_128_GCM_SHA256"), "{err}");
        let c = load_certs(&dir.path().join("client-alice.pem")).unwrap();
        assert_eq!(certificate_names(c[0].as_ref()), vec!["alice".to_string(), "alice".to_string()]);
        assert!(certificate_names(b"not a certificate").is_empty());
    }
}
