//! TLS: certificates from Secrets, SNI selection, client-certificate validation, and the Pingora acceptors built
//! from them. Pure rustls (aws-lc-rs provider); nothing is ever read from files.
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
use rustls::crypto::aws_lc_rs as crypto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::any::Any;
use std::sync::{Arc, OnceLock};

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

/// The crypto provider of every TLS configuration built here: aws-lc-rs, whose X25519 key exchange costs about
/// half of ring's (docs/benchmarks.md, "TLS provider").
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(crypto::default_provider()))
        .clone()
}

/// Makes our provider the process default, for configurations built by code that takes the default (Pingora's
/// connectors, kube-rs) when this runs before them (`main` calls it first, `source::kube::client` before kube-rs
/// builds its own); the configurations built here never depend on it.
pub fn install_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default(crypto::default_provider());
}

/// Parses a PEM certificate chain and private key (a `kubernetes.io/tls` Secret's `tls.crt` / `tls.key`) and
/// checks that they belong together.
pub fn parse_certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let signing =
        crypto::sign::any_supported_type(&key).map_err(|e| TlsError::Mismatch(e.to_string()))?;
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

/// TLS session resumption on the listeners that terminate TLS (`--tls-resumption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Resumption {
    /// rustls's defaults: a cache of 256 sessions per listener and two TLS 1.3 tickets (session ids) sent after
    /// each full handshake, so a returning client can skip the certificate and key exchange.
    #[default]
    On,
    /// No session cache and no tickets: every handshake is a full one (as nginx with `ssl_session_tickets off`
    /// and no `ssl_session_cache`), and no handshake pays for tickets a client may never use.
    Off,
}

static RESUMPTION: OnceLock<Resumption> = OnceLock::new();

/// Sets the session resumption of this process's TLS listeners. Later calls change nothing.
pub fn set_resumption(r: Resumption) {
    let _ = RESUMPTION.set(r);
}

/// Builds the acceptor of one TLS listener: SNI certificate selection, HTTP/2 and HTTP/1.1 by ALPN when `http`
/// (HTTPS listeners; a TLS listener that terminates for TCP backends offers no ALPN), and client certificate
/// validation when configured.
pub fn acceptor(tls: &ListenerTls, http: bool) -> Result<Acceptor, TlsError> {
    let mut certs = Vec::with_capacity(tls.certificates.len());
    for c in &tls.certificates {
        let ck = parse_certified_key(c.cert_pem.as_bytes(), c.key_pem.expose().as_bytes())?;
        certs.push((c.hostname.clone(), ck));
    }
    if certs.is_empty() {
        return Err(TlsError::Config("listener has no certificate".into()));
    }
    let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SniResolver::new(certs));
    // Pingora's TlsSettings builds with the process's default provider and no resumption setting: it is used only
    // for the handshake callbacks, and the configuration is ours, built with our provider.
    let mut settings = TlsSettings::with_callbacks(Box::new(CaptureHandshake))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    settings.set_cert_resolver(resolver.clone());
    if http {
        settings.set_alpn(ALPN::H2H1);
    }
    let mut acceptor = settings.build();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_validation {
        Some(v) => builder.with_client_cert_verifier(client_verifier(v)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    if http {
        // Pingora's wire form of its ALPN setting.
        config.alpn_protocols = acceptor.acceptor.config().alpn_protocols.clone();
    }
    if RESUMPTION.get() == Some(&Resumption::Off) {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    acceptor.acceptor = Arc::new(config).into();
    Ok(acceptor)
}

fn client_verifier(v: &ClientValidation) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for pem in &v.ca_bundles {
        for c in parse_ca_bundle(pem.as_bytes())?.roots {
            roots.roots.push(c);
        }
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
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

/// TLS from the proxy to a backend, ready to connect: the rustls client configuration (trust anchors, name
/// checks, client certificate), the SNI, and a key that keeps pooled connections of different TLS settings apart.
#[derive(Debug)]
pub struct UpstreamTls {
    /// The client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI to send.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Distinguishes connection pools (Pingora's `HttpPeer::group_key`).
    pub group_key: u64,
}

/// Builds the upstream TLS configuration of a backend (BackendTLSPolicy, or ingress-nginx's `backend-protocol:
/// HTTPS`/`GRPCS`). `h2`: the backend speaks HTTP/2 (gRPC backends), offered by ALPN; else HTTP/1.1.
pub fn upstream(tls: &crate::model::BackendTls, h2: bool) -> Result<UpstreamTls, TlsError> {
    use crate::model::TlsVersion;
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = RootCertStore::empty();
    for pem in &tls.ca_bundles {
        roots.roots.extend(parse_ca_bundle(pem.as_bytes())?.roots);
    }
    let roots = Arc::new(roots);
    let mut provider = crypto::default_provider();
    if !tls.tls12_cipher_suites.is_empty() {
        // Only TLS 1.2 suites are restricted, in the order given; TLS 1.3 suites stay first, as rustls orders them.
        let all = std::mem::take(&mut provider.cipher_suites);
        let (tls13, tls12): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
        provider.cipher_suites = tls13;
        for name in &tls.tls12_cipher_suites {
            match tls12
                .iter()
                .find(|s| format!("{:?}", s.suite()) == name.as_str())
            {
                Some(s) => provider.cipher_suites.push(*s),
                None => {
                    return Err(TlsError::Config(format!(
                        "cipher suite {name} is not supported"
                    )))
                }
            }
        }
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = if tls.versions.is_empty() {
        rustls::DEFAULT_VERSIONS.to_vec()
    } else {
        tls.versions
            .iter()
            .map(|v| match v {
                TlsVersion::Tls12 => &rustls::version::TLS12,
                TlsVersion::Tls13 => &rustls::version::TLS13,
            })
            .collect()
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.skip_verify {
        Arc::new(AnyServerCert {
            provider: provider.clone(),
        })
    } else if tls.subject_alt_names.is_empty() {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::BadCa(e.to_string()))?
    } else {
        Arc::new(SanVerifier {
            roots,
            sans: tls.subject_alt_names.clone(),
            provider: provider.clone(),
        })
    };
    let verifier: Arc<dyn ServerCertVerifier> = match tls.verify_depth {
        Some(depth) if !tls.skip_verify => Arc::new(DepthLimit {
            inner: verifier,
            max_intermediates: usize::try_from(depth).unwrap_or(usize::MAX),
        }),
        _ => verifier,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_certificate {
        Some(cc) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cc.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(cc.key_pem.expose().as_bytes())
                .map_err(|e| TlsError::BadKey(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Mismatch(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    config.enable_sni = !tls.no_sni;
    let server_name = rustls::pki_types::ServerName::try_from(tls.hostname.clone())
        .map_err(|e| TlsError::Config(format!("hostname {:?}: {e}", tls.hostname)))?;
    // Every setting goes into the key: Pingora pools connections by peer, so two backends with the same endpoint
    // but different TLS settings must never share a pooled connection.
    let group_key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tls.policy.hash(&mut h);
        tls.hostname.hash(&mut h);
        tls.ca_bundles.hash(&mut h);
        tls.subject_alt_names.hash(&mut h);
        h2.hash(&mut h);
        tls.client_certificate
            .as_ref()
            .map(|c| (&c.source, &c.cert_pem))
            .hash(&mut h);
        tls.skip_verify.hash(&mut h);
        tls.no_sni.hash(&mut h);
        tls.verify_depth.hash(&mut h);
        tls.versions.hash(&mut h);
        tls.tls12_cipher_suites.hash(&mut h);
        h.finish() | 1
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        group_key,
    })
}

/// Accepts whatever certificate a backend presents (nginx's `proxy_ssl_verify off`); the handshake signatures are
/// still checked against the presented key, so the peer holds that key.
#[derive(Debug)]
struct AnyServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Another verifier, given at most `max_intermediates` of the intermediates the backend sent (in the order sent,
/// each certifying the one before): a chain needing more cannot be built, as with OpenSSL's verify depth.
#[derive(Debug)]
struct DepthLimit {
    inner: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    max_intermediates: usize,
}

impl rustls::client::danger::ServerCertVerifier for DepthLimit {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let n = intermediates.len().min(self.max_intermediates);
        self.inner.verify_server_cert(
            end_entity,
            intermediates.get(..n).unwrap_or_default(),
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls name of the TLS 1.2 cipher suite OpenSSL calls `openssl` (`ECDHE-RSA-AES128-GCM-SHA256`), when
/// rustls implements it.
pub fn tls12_suite_for_openssl_name(openssl: &str) -> Option<&'static str> {
    Some(match openssl {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// Checks a backend certificate against trust anchors and a list of acceptable subject alternative names (DNS
/// names or URIs such as SPIFFE IDs), instead of the SNI.
#[derive(Debug)]
struct SanVerifier {
    roots: Arc<RootCertStore>,
    sans: Vec<crate::model::SubjectAltName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn has_uri_san(der: &[u8], uri: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == uri))
}

impl rustls::client::danger::ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let ok = self.sans.iter().any(|san| match san {
            crate::model::SubjectAltName::Hostname(h) => {
                rustls::pki_types::ServerName::try_from(h.as_str())
                    .is_ok_and(|name| rustls::client::verify_server_name(&cert, &name).is_ok())
            }
            crate::model::SubjectAltName::Uri(u) => has_uri_san(end_entity, u),
        });
        if ok {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackendTls;

    /// A CA signed by `parent` (self-signed without one): its PEM and issuer.
    fn ca(
        name: &str,
        parent: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = match parent {
            Some(p) => params.signed_by(&key, p).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), rcgen::Issuer::new(params, key))
    }

    #[test]
    fn listener_configurations_use_our_provider_whatever_the_default() {
        // Whichever provider another library made the process default, the listener's is ours.
        let _ = rustls::crypto::CryptoProvider::install_default(
            rustls::crypto::ring::default_provider(),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls = ListenerTls {
            certificates: vec![crate::model::ListenerCertificate {
                hostname: HostPattern::ingress("a.example").unwrap(),
                source: "Secret shop/a".into(),
                cert_pem: cert.pem(),
                key_pem: crate::model::Redacted::new(key.serialize_pem()),
            }],
            client_validation: None,
        };
        let https = acceptor(&tls, true).unwrap();
        let config = https.acceptor.config();
        assert_eq!(
            format!("{:?}", config.crypto_provider().secure_random),
            format!("{:?}", crypto::default_provider().secure_random)
        );
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(acceptor(&tls, false)
            .unwrap()
            .acceptor
            .config()
            .alpn_protocols
            .is_empty());
    }

    /// Serves one TLS handshake on loopback with `chain` (leaf first) and `key`; returns the port.
    async fn serve(chain: String, key: String) -> u16 {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(crypto::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        port
    }

    async fn handshake(tls: &BackendTls, port: u16) -> Result<(), String> {
        let up = upstream(tls, false).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(up.config).connect(up.server_name, tcp),
        )
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn verify_depth_counts_intermediates_and_skip_verify_accepts_anything() {
        // root -> a -> b -> leaf: two intermediates.
        let (root_pem, root) = ca("root", None);
        let (a_pem, a) = ca("a", Some(&root));
        let (b_pem, b) = ca("b", Some(&a));
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["backend.example.com".to_string()])
            .unwrap()
            .signed_by(&key, &b)
            .unwrap();
        let chain = format!("{}{b_pem}{a_pem}", leaf.pem());
        let key = key.serialize_pem();
        let tls = |depth: Option<u32>| BackendTls {
            verify_depth: depth,
            ..BackendTls::verified(
                "test".into(),
                "backend.example.com".into(),
                vec![root_pem.clone()],
            )
        };
        for (depth, ok) in [(None, true), (Some(2), true), (Some(1), false)] {
            let port = serve(chain.clone(), key.clone()).await;
            let r = handshake(&tls(depth), port).await;
            assert_eq!(r.is_ok(), ok, "depth {depth:?}: {r:?}");
        }
        // Another name or another CA fails; with skip_verify both pass.
        let mut wrong = tls(None);
        wrong.hostname = "other.example.com".into();
        let port = serve(chain.clone(), key.clone()).await;
        assert!(handshake(&wrong, port).await.is_err());
        wrong.ca_bundles = vec![ca("unrelated", None).0];
        wrong.skip_verify = true;
        let port = serve(chain.clone(), key.clone()).await;
        assert_eq!(handshake(&wrong, port).await, Ok(()));
    }
}
