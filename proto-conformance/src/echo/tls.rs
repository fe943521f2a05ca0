//! The HTTPS listener's rustls configuration (ring provider only) and the `tls` object of the echo body.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{ProtocolVersion, RootCertStore, ServerConfig};

use super::EchoTls;

/// What echo-basic reports about a TLS connection (Go's `TLSAssertions`).
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsInfo {
    pub version: String,
    pub peer_certificates: Vec<String>,
    pub server_name: String,
    pub negotiated_protocol: String,
    pub cipher_suite: String,
    /// Go's `ConnectionState.CurveID.String()` of the key exchange group (empty if none).
    pub curve: String,
}

/// Builds the HTTPS server configuration: ALPN `h2` + `http/1.1` (as Go's `ListenAndServeTLS` offers), see
/// [`server_config_with_alpn`].
pub(crate) fn server_config(tls: &EchoTls) -> anyhow::Result<Arc<ServerConfig>> {
    server_config_with_alpn(tls, &[b"h2", b"http/1.1"])
}

/// Builds a server configuration: the given chain and key, the given ALPN protocols (none = no ALPN, as a Go
/// `tls.Config` without `NextProtos`), TLS 1.2 and 1.3, and, with a client CA, Go's `tls.VerifyClientCertIfGiven`.
pub(crate) fn server_config_with_alpn(
    tls: &EchoTls,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Go's server picks from its own preference list (AES-128-GCM first), not the client's.
    provider
        .cipher_suites
        .sort_by_key(|s| go_preference(u16::from(s.suite())));
    let provider = Arc::new(provider);
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("echo server: bad server certificate PEM: {e}"))?;
    if certs.is_empty() {
        bail!("echo server: no CERTIFICATE block in the server certificate PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| anyhow!("echo server: bad server private key PEM: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("echo server: TLS protocol versions")?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                let cert = cert.map_err(|e| anyhow!("echo server: bad client CA PEM: {e}"))?;
                roots
                    .add(cert)
                    .context("echo server: unusable client CA certificate")?;
            }
            if roots.is_empty() {
                bail!("echo server: no CERTIFICATE block in the client CA PEM");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("echo server: client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("echo server: server certificate and key")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Rank of a cipher suite in Go's server preference order (on CPUs with AES hardware).
fn go_preference(id: u16) -> usize {
    const ORDER: [u16; 9] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
    ];
    ORDER.iter().position(|&x| x == id).unwrap_or(ORDER.len())
}

/// Go's `pem.Encode` of a `CERTIFICATE` block: base64 in 64-column lines, trailing newline.
pub(crate) fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Go's `tls.CipherSuiteName` for the suites rustls' ring provider can negotiate; others as `0xXXXX`.
fn cipher_suite_name(id: u16) -> String {
    match id {
        0x1301 => "TLS_AES_128_GCM_SHA256".into(),
        0x1302 => "TLS_AES_256_GCM_SHA384".into(),
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into(),
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".into(),
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into(),
        other => format!("0x{other:04X}"),
    }
}

/// Go's `tlsStateToAssertions` for an established rustls server connection.
pub(crate) fn tls_info(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(ProtocolVersion::TLSv1_1) => "TLSv1.1",
        Some(ProtocolVersion::TLSv1_0) => "TLSv1.0",
        _ => "",
    };
    TlsInfo {
        version: version.to_owned(),
        peer_certificates: conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| pem_certificate(c.as_ref()))
            .collect(),
        server_name: conn.server_name().unwrap_or_default().to_owned(),
        negotiated_protocol: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| cipher_suite_name(u16::from(s.suite())))
            .unwrap_or_default(),
        curve: conn
            .negotiated_key_exchange_group()
            .map(|g| curve_name(u16::from(g.name())))
            .unwrap_or_default(),
    }
}

/// Go's `tls.VersionName` (`TLS 1.3`, with a space; the TCP echo reports this form).
pub(crate) fn go_version_name(conn: &ServerConnection) -> String {
    match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(ProtocolVersion::TLSv1_1) => "TLS 1.1".to_owned(),
        Some(ProtocolVersion::TLSv1_0) => "TLS 1.0".to_owned(),
        Some(other) => format!("0x{:04X}", u16::from(other)),
        None => String::new(),
    }
}

/// Go's `tls.CurveID.String()` for the groups rustls' ring provider offers; others as `CurveID(N)`.
fn curve_name(id: u16) -> String {
    match id {
        0x0017 => "CurveP256".into(),
        0x0018 => "CurveP384".into(),
        0x0019 => "CurveP521".into(),
        0x001d => "X25519".into(),
        0x11ec => "X25519MLKEM768".into(),
        other => format!("CurveID({other})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_lines_are_64_columns() {
        let pem = super::pem_certificate(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
    }
}
