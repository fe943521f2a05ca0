//! The client's TLS verification, made to behave like Go's `crypto/tls` with a custom `RootCAs` pool (what the
//! conformance client uses):
//!
//! * a server certificate that is itself in the trusted set is accepted without building a chain (Go's
//!   `x509.Verify` does this: the TLSRoute cases trust the backend's leaf certificate directly);
//! * host names are matched the way Go's `VerifyHostname` does: a leftmost `*` label matches exactly one label,
//!   with no minimum label count (so `*.org` matches `example.org`; webpki would refuse such a wildcard).
//!
//! Host names of certificates the harness generated are known by DER; any other certificate is checked by
//! webpki's own name matching.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// Go's host name matching (`crypto/x509` `matchHostnames`), case-insensitive, trailing dots ignored.
pub fn go_match_hostname(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    if p.len() != h.len() {
        return false;
    }
    p.iter()
        .zip(h.iter())
        .enumerate()
        .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
}

/// A server certificate verifier with Go's rules (see the module documentation).
#[derive(Debug)]
pub struct GoLikeVerifier {
    trusted: Vec<CertificateDer<'static>>,
    roots: RootCertStore,
    known_sans: Arc<HashMap<Vec<u8>, Vec<String>>>,
    provider: Arc<CryptoProvider>,
}

impl GoLikeVerifier {
    /// Trusts the certificates in `trust_pems` (CA or leaf).
    pub fn new(
        trust_pems: &[String],
        known_sans: Arc<HashMap<Vec<u8>, Vec<String>>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<GoLikeVerifier, String> {
        let mut trusted = Vec::new();
        let mut roots = RootCertStore::empty();
        for pem in trust_pems {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("bad trusted certificate PEM: {e}"))?;
                // A certificate webpki cannot use as an anchor is still trusted by exact match.
                let _ = roots.add(cert.clone());
                trusted.push(cert);
            }
        }
        if trusted.is_empty() {
            return Err("no certificate in the trusted PEM".to_string());
        }
        Ok(GoLikeVerifier {
            trusted,
            roots,
            known_sans,
            provider,
        })
    }
}

impl ServerCertVerifier for GoLikeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let directly_trusted = self
            .trusted
            .iter()
            .any(|t| t.as_ref() == end_entity.as_ref());
        if !directly_trusted {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        match (server_name, self.known_sans.get(end_entity.as_ref())) {
            (ServerName::DnsName(dns), Some(sans)) => {
                if sans.iter().any(|p| go_match_hostname(p, dns.as_ref())) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(Error::General(format!(
                        "x509: certificate is valid for {}, not {}",
                        sans.join(", "),
                        dns.as_ref()
                    )))
                }
            }
            _ => {
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate resolver that records whether the server asked for a certificate (Go's
/// `GetClientCertificate` hook in the conformance tests).
#[derive(Debug)]
pub struct RecordingResolver {
    key: Option<Arc<CertifiedKey>>,
    /// Set when the server sent a CertificateRequest.
    pub requested: Arc<AtomicBool>,
}

impl RecordingResolver {
    /// A resolver presenting `cert_pem`/`key_pem` (or nothing).
    pub fn new(
        client: Option<(&str, &str)>,
        requested: Arc<AtomicBool>,
        provider: &CryptoProvider,
    ) -> Result<RecordingResolver, String> {
        let key = match client {
            None => None,
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("bad client certificate PEM: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| format!("bad client key PEM: {e}"))?;
                Some(Arc::new(
                    CertifiedKey::from_der(certs, key, provider)
                        .map_err(|e| format!("client certificate: {e}"))?,
                ))
            }
        };
        Ok(RecordingResolver { key, requested })
    }
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}
