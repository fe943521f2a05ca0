//! Test certificates (rcgen): a CA, leaf certificates it signs, and the Secret manifests that hold them.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate authority: its certificate (PEM) and what signs leaves with it.
pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

/// A self-signed CA with common name `name`.
pub fn ca(name: &str) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A leaf certificate for `names`, signed by `ca`: (cert PEM, key PEM).
pub fn leaf(ca: &Ca, names: &[&str]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `pem` indented by four spaces, for a YAML block scalar.
pub fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret `ns/name` holding `cert` (cert PEM, key PEM), with its `---` separator.
pub fn tls_secret(ns: &str, name: &str, cert: &(String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(&cert.0),
        indent(&cert.1)
    )
}

/// The DER bytes of the first certificate in `pem`.
pub fn der(pem: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("certificate PEM: {e:?}"))?;
    Ok(cert.to_vec())
}
