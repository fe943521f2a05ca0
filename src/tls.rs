//! TLS: certificates from Secrets, SNI selection, client-certificate validation, and the Pingora acceptors built
//! from them. Pure rustls (ring provider); nothing is ever read from files.
//!
//! Translation calls [`parse_certified_key`] and [`parse_ca_bundle`] to validate what Secrets and ConfigMaps hold
//! (so a bad certificate becomes a status condition, not a handshake failure); the listener side calls
//! [`acceptor`] once per TLS listener per published snapshot.

use crate::model::{ClientValidation, HostPattern, ListenerTls};
use crate::router::HostIndex;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::listeners::{TlsAccept, ALPN};
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::any::Any;
use std::sync::Arc;

/// Why certificate material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// No certificate in the PEM text.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// A certificate block is not valid PEM/DER.
    #[error("certificate is not valid PEM: {0}")]
    BadCertificate(String),
    /// No usable private key in the PEM text.
    #[error("no usable private key found (PKCS#8, PKCS#1 or SEC1 PEM): {0}")]
    BadKey(String),
    /// The key does not belong to the certificate, or its type is not supported.
    #[error("private key does not match the certificate or is unsupported: {0}")]
    Mismatch(String),
    /// A CA bundle has no usable certificate.
    #[error("CA bundle has no usable certificate: {0}")]
    BadCa(String),
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn install_provider() {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}

/// Parses a PEM certificate chain and private key (a `kubernetes.io/tls` Secret's `tls.crt` / `tls.key`) and
/// checks that they belong together.
pub fn parse_certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    install_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// Parses a PEM CA bundle (a ConfigMap's `ca.crt`) into a root store.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::BadCa("no PEM certificate found".into()));
    }
    Ok(roots)
}

/// Chooses a certificate by SNI: the most specific hostname pattern that covers the name (exact, then the longest
/// wildcard, then the catch-all). Without SNI, or when nothing covers it, the listener's fallback certificate.
#[derive(Debug)]
pub struct SniResolver {
    index: HostIndex<Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver over (hostname pattern, certificate) pairs; the first pair is the fallback.
    pub fn new(certs: Vec<(HostPattern, Arc<CertifiedKey>)>) -> Self {
        let fallback = certs.first().map(|(_, c)| c.clone());
        let patterns: Vec<HostPattern> = certs.iter().map(|(p, _)| p.clone()).collect();
        let index = HostIndex::build(patterns.iter(), false, |key, _| {
            certs
                .iter()
                .find(|(p, _)| p == key)
                .map(|(_, c)| c.clone())
                .or_else(|| fallback.clone())
                .unwrap_or_else(|| certs[0].1.clone())
        });
        SniResolver { index, fallback }
    }

    /// The certificate for `sni` (lowercase).
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        match sni {
            Some(name) => self
                .index
                .get(name)
                .cloned()
                .or_else(|| self.fallback.clone()),
            None => self.fallback.clone(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        self.lookup(sni.as_deref())
    }
}

/// What the TLS handshake told us, kept with the connection (Pingora's SSL digest extension).
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// The SNI the client sent, lowercase.
    pub server_name: Option<String>,
    /// Whether the client presented a certificate.
    pub client_certificate: bool,
}

struct CaptureHandshake;

#[async_trait::async_trait]
impl TlsAccept for CaptureHandshake {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(HandshakeInfo {
            server_name: tls.server_name().map(str::to_ascii_lowercase),
            client_certificate: tls.peer_certificate_der().is_some(),
        }))
    }
}

/// Builds the acceptor of one TLS listener: SNI certificate selection, HTTP/2 and HTTP/1.1 by ALPN, and client
/// certificate validation when configured.
pub fn acceptor(tls: &ListenerTls) -> Result<Acceptor, TlsError> {
    install_provider();
    let mut certs = Vec::with_capacity(tls.certificates.len());
    for c in &tls.certificates {
        let ck = parse_certified_key(c.cert_pem.as_bytes(), c.key_pem.expose().as_bytes())?;
        certs.push((c.hostname.clone(), ck));
    }
    if certs.is_empty() {
        return Err(TlsError::Config("listener has no certificate".into()));
    }
    let mut settings = TlsSettings::with_callbacks(Box::new(CaptureHandshake))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    settings.set_cert_resolver(Arc::new(SniResolver::new(certs)));
    settings.set_alpn(ALPN::H2H1);
    if let Some(v) = &tls.client_validation {
        settings.set_client_cert_verifier(client_verifier(v)?);
    }
    Ok(settings.build())
}

fn client_verifier(v: &ClientValidation) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for pem in &v.ca_bundles {
        for c in parse_ca_bundle(pem.as_bytes())?.roots {
            roots.roots.push(c);
        }
    }
    let inner = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    if v.insecure_fallback {
        Ok(Arc::new(InsecureFallback(inner)))
    } else {
        Ok(inner)
    }
}

/// `AllowInsecureFallback`: asks for a client certificate and validates it, but lets the connection in when the
/// certificate is missing or does not validate (the Gateway API mode that delegates authorization to the backend).
/// The handshake signature is still checked, so a client cannot present a certificate it has no key for.
#[derive(Debug)]
struct InsecureFallback(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(self
            .0
            .verify_client_cert(end_entity, intermediates, now)
            .unwrap_or_else(|_| ClientCertVerified::assertion()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
