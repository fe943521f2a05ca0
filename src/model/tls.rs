//! TLS settings of a listener.

use super::HostPattern;
use serde::{Serialize, Serializer};
use std::fmt;

/// Secret material: compared and cloned like a string, but never printed or serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps secret text.
    pub fn new(s: impl Into<String>) -> Self {
        Redacted(s.into())
    }

    /// The secret text, for the one place that needs it (building the TLS configuration).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// TLS termination on a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// Certificates by SNI hostname, most specific first; the first one also answers clients without SNI or with
    /// an SNI no certificate covers. Never empty.
    pub certificates: Vec<ListenerCertificate>,
    /// Client-certificate validation, when a Gateway asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
}

/// One certificate and the hostnames it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerCertificate {
    /// SNI names this certificate is chosen for.
    pub hostname: HostPattern,
    /// Where it came from, e.g. `Secret ns/name`.
    pub source: String,
    /// PEM certificate chain.
    #[serde(skip)]
    pub cert_pem: String,
    /// PEM private key.
    #[serde(skip)]
    pub key_pem: Redacted,
}

/// Frontend client-certificate validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientValidation {
    /// PEM CA bundles the client certificate must chain to.
    #[serde(skip)]
    pub ca_bundles: Vec<String>,
    /// Where the CA bundles came from.
    pub sources: Vec<String>,
    /// `AllowInsecureFallback`: clients without a certificate, or with one that fails validation, are let in
    /// too (a certificate is still asked for).
    pub insecure_fallback: bool,
}
