//! The global settings annotations fall back on: Ingress v1 defaults for Ingresses of our own class, ingress-nginx's
//! defaults (and its ConfigMap keys, and `--ingress-nginx-set`) for Ingresses taken over from ingress-nginx.

use super::annotations::{next_upstream, NextUpstream};
use super::values::{cidr_list, go_bool, go_int, nginx_size};
use crate::model::policy::Cidr;

/// Which semantics an Ingress is translated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    /// Our own class: plain Ingress v1; annotations are explicit opt-ins.
    IngressV1,
    /// An IngressClass taken over from ingress-nginx: its defaults apply too.
    IngressNginx,
}

/// Settings that apply to every Ingress of a profile unless an annotation says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The profile these settings are for.
    pub profile: Profile,
    /// `ssl-redirect`: redirect plain HTTP to https on hosts with a certificate.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirect plain HTTP to https everywhere.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash` on https redirects.
    pub preserve_trailing_slash: bool,
    /// `http-redirect-code`: the status of https redirects (301, 302, 307 or 308).
    pub http_redirect_code: u16,
    /// `proxy-body-size` in bytes; `Some(0)` is no limit, `None` leaves the proxy's `--max-request-body`.
    pub body_size: Option<u64>,
    /// `proxy-connect-timeout` in seconds.
    pub connect_timeout: Option<u32>,
    /// `proxy-read-timeout` in seconds.
    pub read_timeout: Option<u32>,
    /// `proxy-send-timeout` in seconds.
    pub send_timeout: Option<u32>,
    /// `use-forwarded-headers`: trust the client's `X-Forwarded-*`.
    pub use_forwarded_headers: bool,
    /// `allow-snippet-annotations`.
    pub allow_snippets: bool,
    /// `limit-req-status-code`.
    pub limit_req_status: u16,
    /// `limit-conn-status-code`.
    pub limit_conn_status: u16,
    /// `whitelist-source-range` (global allowlist).
    pub allowlist: Vec<Cidr>,
    /// `denylist-source-range` (global denylist).
    pub denylist: Vec<Cidr>,
    /// `proxy-next-upstream`: the failures retried on the next endpoint (`None`: no retry policy unless an
    /// annotation sets one).
    pub next_upstream: Option<Vec<NextUpstream>>,
    /// `proxy-next-upstream-tries`: attempts in all (0: no limit but the endpoints).
    pub next_upstream_tries: i64,
    /// `proxy-next-upstream-timeout` in seconds (0: none).
    pub next_upstream_timeout: i64,
}

/// The ConfigMap keys [`Settings::set`] understands.
pub const KEYS: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "preserve-trailing-slash",
    "http-redirect-code",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "use-forwarded-headers",
    "allow-snippet-annotations",
    "limit-req-status-code",
    "limit-conn-status-code",
    "whitelist-source-range",
    "denylist-source-range",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
];

impl Settings {
    /// Ingress v1 semantics: nothing beyond what the Ingress says.
    pub fn ingress_v1() -> Self {
        Settings {
            profile: Profile::IngressV1,
            ssl_redirect: false,
            force_ssl_redirect: false,
            preserve_trailing_slash: false,
            http_redirect_code: 308,
            body_size: None,
            connect_timeout: None,
            read_timeout: None,
            send_timeout: None,
            use_forwarded_headers: false,
            allow_snippets: false,
            limit_req_status: 503,
            limit_conn_status: 503,
            allowlist: Vec::new(),
            denylist: Vec::new(),
            next_upstream: None,
            next_upstream_tries: 3,
            next_upstream_timeout: 0,
        }
    }

    /// ingress-nginx v1.15's defaults (`internal/ingress/controller/config/config.go`): https redirects on hosts
    /// with a certificate, 308; bodies up to 1m; 5 s to connect, 60 s idle read and send; client `X-Forwarded-*`
    /// not trusted; snippets not allowed; failed attempts (`error timeout`) retried on the next endpoint, 3
    /// attempts in all.
    pub fn ingress_nginx() -> Self {
        Settings {
            profile: Profile::IngressNginx,
            ssl_redirect: true,
            body_size: Some(1 << 20),
            connect_timeout: Some(5),
            read_timeout: Some(60),
            send_timeout: Some(60),
            next_upstream: Some(vec![NextUpstream::Error, NextUpstream::Timeout]),
            ..Settings::ingress_v1()
        }
    }

    /// Applies one ConfigMap key. `Err` says why the value is refused (the setting keeps its value); keys this
    /// does not know are `Ok(false)`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let seconds = |v: &str| -> Result<Option<u32>, String> {
            let n = go_int(v)?;
            u32::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| format!("{n} is not a positive number of seconds"))
        };
        let status = |v: &str, allowed: &[u16]| -> Result<u16, String> {
            let n = go_int(v)?;
            u16::try_from(n)
                .ok()
                .filter(|n| allowed.is_empty() || allowed.contains(n))
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| format!("{n} is not an allowed status"))
        };
        match key {
            "ssl-redirect" => self.ssl_redirect = go_bool(value)?,
            "force-ssl-redirect" => self.force_ssl_redirect = go_bool(value)?,
            "preserve-trailing-slash" => self.preserve_trailing_slash = go_bool(value)?,
            "http-redirect-code" => {
                // ingress-nginx accepts only these and falls back to 308 otherwise.
                self.http_redirect_code = status(value, &[301, 302, 307, 308])?
            }
            "proxy-body-size" => {
                let n = nginx_size(value).ok_or("not an nginx size (digits and k, m or g)")?;
                self.body_size = Some(n);
            }
            "proxy-connect-timeout" => self.connect_timeout = seconds(value)?,
            "proxy-read-timeout" => self.read_timeout = seconds(value)?,
            "proxy-send-timeout" => self.send_timeout = seconds(value)?,
            "use-forwarded-headers" => self.use_forwarded_headers = go_bool(value)?,
            "allow-snippet-annotations" => self.allow_snippets = go_bool(value)?,
            "limit-req-status-code" => self.limit_req_status = status(value, &[])?,
            "limit-conn-status-code" => self.limit_conn_status = status(value, &[])?,
            "whitelist-source-range" => self.allowlist = cidr_list(value)?,
            "denylist-source-range" => self.denylist = cidr_list(value)?,
            "proxy-next-upstream" => {
                self.next_upstream = Some(next_upstream(value).ok_or(
                    "not a list of error, timeout, invalid_header, http_5xx/403/404/429, non_idempotent, off",
                )?)
            }
            "proxy-next-upstream-tries" => {
                self.next_upstream_tries = go_int(value).and_then(|n| {
                    (n >= 0)
                        .then_some(n)
                        .ok_or_else(|| format!("{n} is not a number of tries"))
                })?
            }
            "proxy-next-upstream-timeout" => {
                self.next_upstream_timeout = go_int(value).and_then(|n| {
                    (n >= 0)
                        .then_some(n)
                        .ok_or_else(|| format!("{n} is not a number of seconds"))
                })?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_differ_by_profile() {
        let v1 = Settings::ingress_v1();
        let nginx = Settings::ingress_nginx();
        assert!(!v1.ssl_redirect && nginx.ssl_redirect);
        assert_eq!(v1.body_size, None);
        assert_eq!(nginx.body_size, Some(1024 * 1024));
        assert_eq!(
            (nginx.read_timeout, nginx.send_timeout),
            (Some(60), Some(60))
        );
        assert_eq!(nginx.connect_timeout, Some(5));
        assert_eq!(v1.next_upstream, None);
        assert_eq!(
            nginx.next_upstream,
            Some(vec![NextUpstream::Error, NextUpstream::Timeout])
        );
        assert!(!nginx.use_forwarded_headers && !nginx.allow_snippets);
        assert_eq!(nginx.http_redirect_code, 308);
    }

    #[test]
    fn configmap_keys() {
        let mut s = Settings::ingress_nginx();
        for (k, v, ok) in [
            ("ssl-redirect", "false", true),
            ("ssl-redirect", "no", false),
            ("proxy-body-size", "8m", true),
            ("proxy-body-size", "8mb", false),
            ("proxy-read-timeout", "120", true),
            ("proxy-read-timeout", "0", false),
            ("proxy-read-timeout", "2m", false),
            ("http-redirect-code", "301", true),
            ("http-redirect-code", "303", false),
            ("use-forwarded-headers", "true", true),
            ("whitelist-source-range", "10.0.0.0/8,192.168.1.1", true),
            ("whitelist-source-range", "10.0.0.0/40", false),
            ("proxy-next-upstream", "error http_502", true),
            ("proxy-next-upstream", "error http_501", false),
            ("proxy-next-upstream-tries", "5", true),
            ("proxy-next-upstream-tries", "-1", false),
            ("proxy-next-upstream-timeout", "30", true),
            ("proxy-next-upstream-timeout", "30s", false),
        ] {
            assert_eq!(s.set(k, v).is_ok(), ok, "{k}={v}");
        }
        assert!(!s.ssl_redirect);
        assert_eq!(s.body_size, Some(8 << 20));
        assert_eq!(s.read_timeout, Some(120));
        assert_eq!(s.http_redirect_code, 301);
        assert!(s.use_forwarded_headers);
        assert_eq!(s.allowlist.len(), 2);
        assert_eq!(
            s.next_upstream,
            Some(vec![NextUpstream::Error, NextUpstream::Status(502)])
        );
        assert_eq!((s.next_upstream_tries, s.next_upstream_timeout), (5, 30));
        assert_eq!(s.set("proxy-body-size", "0"), Ok(true));
        assert_eq!(s.body_size, Some(0));
        assert_eq!(s.set("worker-processes", "4"), Ok(false));
    }
}
