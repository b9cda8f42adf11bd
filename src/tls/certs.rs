//! Certificate generation for `ftpgate certs init`: a CA, a server certificate
//! signed by it, and client certificates for mutual TLS, as PEM files. Private
//! keys are written with mode 0600.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertError {
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
}

/// What was written, for the operator.
#[derive(Debug)]
pub struct Generated {
    pub files: Vec<PathBuf>,
}

/// The kind of key each certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256: small and fast; every current client supports it.
    #[default]
    Ecdsa,
    /// RSA 2048: for legacy clients (older Java, Windows and embedded FTP
    /// libraries) that cannot verify ECDSA certificates.
    Rsa,
}

fn new_key(kind: KeyType) -> Result<KeyPair, CertError> {
    match kind {
        KeyType::Ecdsa => Ok(KeyPair::generate()?),
        // aws-lc-rs generates RSA keys (2048 bits for PKCS_RSA_SHA256),
        // so the pure-Rust `rsa` crate (RUSTSEC-2023-0071) is no longer needed.
        KeyType::Rsa => Ok(KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?),
    }
}

/// Valid for ten years: these are for a private CA the operator controls.
const VALID_DAYS: i64 = 3650;

fn params(cn: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "ftpgate");
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(VALID_DAYS);
    p
}

fn write(path: &Path, contents: &str, private: bool, force: bool) -> Result<(), CertError> {
    if path.exists() && !force {
        return Err(CertError::Exists(path.to_path_buf()));
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let mut f = o.open(path).map_err(|source| CertError::Write { path: path.to_path_buf(), source })?;
    f.write_all(contents.as_bytes()).map_err(|source| CertError::Write { path: path.to_path_buf(), source })?;
    Ok(())
}

/// Who gets a client certificate besides the server: FTP clients for mutual
/// TLS (`client-NAME`) and outbound connectors (`connector-NAME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Holders<'a> {
    pub clients: &'a [String],
    pub connectors: &'a [String],
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` (SANs: `names`, each an
/// IP address or a DNS name) and `client-NAME.pem`/`.key` per client and
/// `connector-NAME.pem`/`.key` per connector into `dir`.
pub fn init(
    dir: &Path,
    names: &[String],
    holders: Holders<'_>,
    force: bool,
    kind: KeyType,
) -> Result<Generated, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_path_buf(), source })?;
    let mut files = vec![];
    let ca_key = new_key(kind)?;
    let mut ca_params = params("ftpgate CA", vec![]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut out = vec![(dir.join("ca.pem"), ca_cert.pem(), false), (dir.join("ca.key"), issuer_key_pem(&issuer), true)];

    let sans = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    let server_key = new_key(kind)?;
    let mut sp = params(names.first().map_or("ftpgate", String::as_str), sans);
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &issuer)?;
    out.push((dir.join("server.pem"), server.pem(), false));
    out.push((dir.join("server.key"), server_key.serialize_pem(), true));

    let holders =
        holders.clients.iter().map(|n| ("client", n)).chain(holders.connectors.iter().map(|n| ("connector", n)));
    for (prefix, name) in holders {
        let key = new_key(kind)?;
        let mut cp = params(name, vec![]);
        if let Ok(dns) = name.clone().try_into() {
            cp.subject_alt_names = vec![SanType::DnsName(dns)];
        }
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = cp.signed_by(&key, &issuer)?;
        out.push((dir.join(format!("{prefix}-{name}.pem")), cert.pem(), false));
        out.push((dir.join(format!("{prefix}-{name}.key")), key.serialize_pem(), true));
    }
    for (path, pem, private) in out {
        write(&path, &pem, private, force)?;
        files.push(path);
    }
    Ok(Generated { files })
}

fn issuer_key_pem(issuer: &Issuer<'_, KeyPair>) -> String {
    issuer.key().serialize_pem()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_loadable_files_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let who = Holders { clients: &["alice".into()], connectors: &["dc1".into()] };
        let g = init(dir.path(), &["127.0.0.1".into(), "ftp.example.com".into()], who, false, KeyType::Ecdsa).unwrap();
        assert_eq!(g.files.len(), 8);
        let c = crate::tls::load_certs(&dir.path().join("connector-dc1.pem")).unwrap();
        assert_eq!(crate::tls::certificate_names(c[0].as_ref())[0], "dc1");
        for f in &g.files {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            let want = if f.extension().unwrap() == "key" { 0o600 } else { 0o644 };
            assert_eq!(mode, want, "{}", f.display());
        }
        assert!(crate::tls::load_certs(&dir.path().join("server.pem")).is_ok());
        assert!(crate::tls::load_key(&dir.path().join("client-alice.key")).is_ok());
        assert!(matches!(init(dir.path(), &[], Holders::default(), false, KeyType::Ecdsa), Err(CertError::Exists(_))));
    }

    /// RSA certificates load into a rustls server config with their key.
    #[test]
    fn rsa_key_type_makes_rsa_certificates_that_load() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["127.0.0.1".into()], Holders::default(), false, KeyType::Rsa).unwrap();
        let key = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
        let certs = crate::tls::load_certs(&dir.path().join("server.pem")).unwrap();
        let parsed = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap().1;
        assert_eq!(parsed.public_key().algorithm.algorithm.to_id_string(), "1.2.840.113549.1.1.1", "rsaEncryption");
        assert!(key.contains("BEGIN PRIVATE KEY"));
        let key = crate::tls::load_key(&dir.path().join("server.key")).unwrap();
        rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    }
}
