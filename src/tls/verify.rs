//! Backend certificate checks other than a CA: a pinned SHA-256 fingerprint, or
//! none at all when the operator explicitly asks. Handshake signatures are still
//! verified in both cases, so the peer must hold the certificate's key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug)]
pub struct Pinned {
    /// `None`: accept any certificate (explicitly insecure).
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    pub fn new(pin: Option<[u8; 32]>, provider: Arc<CryptoProvider>) -> Pinned {
        Pinned { pin, provider }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() == pin => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(Error::General("backend certificate does not match the pinned SHA-256 fingerprint".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use crate::tls_options::parse_fingerprint;

    #[test]
    fn fingerprints() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex), Some([0xab; 32]));
        let colons: Vec<String> = (0..32).map(|_| "0f".to_string()).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")), Some([0x0f; 32]));
        assert_eq!(parse_fingerprint("abc"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }
}
