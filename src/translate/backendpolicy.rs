//! How a Service's endpoints are chosen and health-checked, from `portcullis.dev/*` annotations on the Service.
//!
//! Gateway API has no core resource for load-balancing algorithms or health checks (Envoy Gateway adds a
//! BackendTrafficPolicy CRD, Traefik reads Service annotations). Annotations on the Service need no extra kind to
//! watch and read the same in a cluster and in files. Each value is parsed into a typed [`BackendPolicy`]; a bad
//! value is a warning naming the Service, the annotation and the value, and that setting keeps its default.

use super::httproute::parse_duration;
use crate::model::{
    ActiveHealth, BackendPolicy, HashOn, HealthCheck, LoadBalancing, PassiveHealth,
};
use std::collections::BTreeMap;

/// The annotation prefix.
pub(crate) const PREFIX: &str = "portcullis.dev/";

/// Every key this module reads, without the prefix (for "did you mean" on unknown keys).
const KEYS: &[&str] = &[
    "load-balancer",
    "hash-on",
    "max-failures",
    "ejection-time",
    "max-ejection-time",
    "health-check",
    "health-check-host",
    "health-check-interval",
    "health-check-timeout",
    "healthy-threshold",
    "unhealthy-threshold",
];

/// The keys that only tune an active check.
const ACTIVE_ONLY: &[&str] = &[
    "health-check-host",
    "health-check-interval",
    "health-check-timeout",
    "healthy-threshold",
    "unhealthy-threshold",
];

/// Defaults of an active check.
const CHECK_INTERVAL_MS: u64 = 5_000;
const CHECK_TIMEOUT_MS: u64 = 1_000;
const HEALTHY_THRESHOLD: u32 = 1;
const UNHEALTHY_THRESHOLD: u32 = 2;

/// Parses the `portcullis.dev/*` annotations of a Service. Returns the policy and the problems found (each a
/// complete sentence naming the annotation and its value).
pub(crate) fn parse(
    annotations: Option<&BTreeMap<String, String>>,
) -> (BackendPolicy, Vec<String>) {
    let mut policy = BackendPolicy::default();
    let mut problems = Vec::new();
    let Some(annotations) = annotations else {
        return (policy, problems);
    };
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).map(|v| v.trim());
    let mut bad = |key: &str, value: &str, why: String| {
        problems.push(format!(
            "annotation {PREFIX}{key}: {value:?} {why}; the default is used"
        ));
    };
    // Valid settings that another annotation makes pointless (reported after the bad values).
    let mut ignored = Vec::new();
    let mut no_effect = |key: &str, value: &str, why: String| {
        ignored.push(format!(
            "annotation {PREFIX}{key}: {value:?} {why}; ignored"
        ));
    };

    let hash_on = match get("hash-on") {
        None => None,
        Some(v) => match parse_hash_on(v) {
            Ok(h) => Some(h),
            Err(e) => {
                bad("hash-on", v, e);
                None
            }
        },
    };
    policy.load_balancing = match (get("load-balancer"), hash_on) {
        (None, None) => LoadBalancing::RoundRobin,
        (None, Some(h)) => LoadBalancing::ConsistentHash(h),
        (Some(v), h) => match v {
            "round-robin" | "random" | "least-request" => {
                if h.is_some() {
                    let hv = get("hash-on").unwrap_or_default();
                    no_effect(
                        "hash-on",
                        hv,
                        format!("has no effect with {PREFIX}load-balancer {v:?} (it applies to consistent-hash)"),
                    );
                }
                match v {
                    "random" => LoadBalancing::Random,
                    "least-request" => LoadBalancing::LeastRequest,
                    _ => LoadBalancing::RoundRobin,
                }
            }
            "consistent-hash" => match h {
                Some(h) => LoadBalancing::ConsistentHash(h),
                None => {
                    bad(
                        "load-balancer",
                        v,
                        format!("needs {PREFIX}hash-on (source-ip, uri, header:NAME, cookie:NAME or query:NAME)"),
                    );
                    LoadBalancing::RoundRobin
                }
            },
            _ => {
                bad(
                    "load-balancer",
                    v,
                    "is not one of round-robin, random, least-request, consistent-hash".into(),
                );
                if h.is_some() {
                    let hv = get("hash-on").unwrap_or_default();
                    no_effect(
                        "hash-on",
                        hv,
                        format!("has no effect: {PREFIX}load-balancer is not valid"),
                    );
                }
                LoadBalancing::RoundRobin
            }
        },
    };

    let mut passive = PassiveHealth::default();
    if let Some(v) = get("max-failures") {
        match v.parse::<u32>() {
            Ok(n) if n <= 1000 => passive.max_failures = n,
            _ => bad("max-failures", v, "is not a number from 0 to 1000".into()),
        }
    }
    if let Some(v) = get("ejection-time") {
        match positive_duration(v) {
            Ok(ms) => passive.ejection_ms = ms,
            Err(e) => bad("ejection-time", v, e),
        }
    }
    if let Some(v) = get("max-ejection-time") {
        match positive_duration(v) {
            Ok(ms) => passive.max_ejection_ms = ms,
            Err(e) => bad("max-ejection-time", v, e),
        }
    }
    if passive.max_ejection_ms < passive.ejection_ms {
        if let Some(v) = get("max-ejection-time") {
            no_effect(
                "max-ejection-time",
                v,
                format!("is shorter than the first back-off ({PREFIX}ejection-time), which is used instead"),
            );
        }
        passive.max_ejection_ms = passive.ejection_ms;
    }
    policy.passive = passive;

    if let Some(v) = get("health-check") {
        let check = if v == "tcp" {
            Some(HealthCheck::Tcp)
        } else if let Some(path) = v.strip_prefix("http:") {
            if path.starts_with('/') && http::uri::PathAndQuery::try_from(path).is_ok() {
                Some(HealthCheck::Http {
                    path: path.to_string(),
                    host: None,
                })
            } else {
                bad(
                    "health-check",
                    v,
                    "needs a path starting with / after http:".into(),
                );
                None
            }
        } else {
            bad("health-check", v, "is not tcp or http:/PATH".into());
            None
        };
        if let Some(mut check) = check {
            match (&mut check, get("health-check-host")) {
                (HealthCheck::Http { host, .. }, Some(h)) => {
                    if http::HeaderValue::from_str(h).is_ok() && !h.is_empty() {
                        *host = Some(h.to_string());
                    } else {
                        bad(
                            "health-check-host",
                            h,
                            "is not a valid Host header value".into(),
                        );
                    }
                }
                (HealthCheck::Tcp, Some(h)) => no_effect(
                    "health-check-host",
                    h,
                    "has no effect on a tcp check (it sends no Host)".into(),
                ),
                (_, None) => {}
            }
            let mut active = ActiveHealth {
                check,
                interval_ms: CHECK_INTERVAL_MS,
                timeout_ms: CHECK_TIMEOUT_MS,
                healthy_threshold: HEALTHY_THRESHOLD,
                unhealthy_threshold: UNHEALTHY_THRESHOLD,
            };
            if let Some(v) = get("health-check-interval") {
                match positive_duration(v) {
                    Ok(ms) if ms >= 100 => active.interval_ms = ms,
                    Ok(_) => bad("health-check-interval", v, "is shorter than 100ms".into()),
                    Err(e) => bad("health-check-interval", v, e),
                }
            }
            if let Some(v) = get("health-check-timeout") {
                match positive_duration(v) {
                    Ok(ms) => active.timeout_ms = ms,
                    Err(e) => bad("health-check-timeout", v, e),
                }
            }
            for (key, slot) in [
                ("healthy-threshold", &mut active.healthy_threshold),
                ("unhealthy-threshold", &mut active.unhealthy_threshold),
            ] {
                if let Some(v) = get(key) {
                    match v.parse::<u32>() {
                        Ok(n) if (1..=100).contains(&n) => *slot = n,
                        _ => bad(key, v, "is not a number from 1 to 100".into()),
                    }
                }
            }
            policy.active = Some(active);
        }
    }
    if policy.active.is_none() {
        // The settings of an active check, without one to apply them to.
        for key in ACTIVE_ONLY {
            if let Some(v) = get(key) {
                no_effect(
                    key,
                    v,
                    format!("has no effect without a valid {PREFIX}health-check"),
                );
            }
        }
    }

    problems.extend(ignored);
    for key in annotations.keys() {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if !KEYS.contains(&rest) {
            let hint = closest(rest)
                .map(|k| format!(" (did you mean {PREFIX}{k}?)"))
                .unwrap_or_default();
            problems.push(format!("unknown annotation {key}{hint}; ignored"));
        }
    }
    (policy, problems)
}

fn positive_duration(v: &str) -> Result<u64, String> {
    match parse_duration(v) {
        Ok(0) => Err("must be longer than 0s".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err("is not a duration like 500ms, 10s or 1m30s".into()),
    }
}

fn parse_hash_on(v: &str) -> Result<HashOn, String> {
    let named = |name: &str| -> Result<String, String> {
        if name.is_empty() {
            Err("needs a name after the colon".into())
        } else {
            Ok(name.to_string())
        }
    };
    match v.split_once(':') {
        None if v == "source-ip" => Ok(HashOn::SourceIp),
        None if v == "uri" => Ok(HashOn::Uri),
        Some(("header", n)) => {
            let n = named(n)?;
            http::HeaderName::from_bytes(n.as_bytes())
                .map(|h| HashOn::Header(h.as_str().to_string()))
                .map_err(|_| "names an invalid header".to_string())
        }
        Some(("cookie", n)) => Ok(HashOn::Cookie(named(n)?)),
        Some(("query", n)) => Ok(HashOn::QueryParam(named(n)?)),
        _ => Err("is not source-ip, uri, header:NAME, cookie:NAME or query:NAME".into()),
    }
}

/// The known key closest to `key` by edit distance, when it is close enough to be a typo.
fn closest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn no_annotations_is_the_default() {
        let (p, problems) = parse(None);
        assert!(p.is_default());
        assert!(problems.is_empty());
        let (p, problems) = parse(Some(&BTreeMap::from([("other/x".into(), "1".into())])));
        assert!(p.is_default());
        assert!(problems.is_empty());
    }

    #[test]
    fn load_balancer_values() {
        type Case<'a> = (&'a [(&'a str, &'a str)], LoadBalancing, usize);
        let table: &[Case<'_>] = &[
            (&[("load-balancer", "random")], LoadBalancing::Random, 0),
            (
                &[("load-balancer", "least-request")],
                LoadBalancing::LeastRequest,
                0,
            ),
            (
                &[("load-balancer", "round-robin")],
                LoadBalancing::RoundRobin,
                0,
            ),
            (
                &[("hash-on", "header:X-User")],
                LoadBalancing::ConsistentHash(HashOn::Header("x-user".into())),
                0,
            ),
            (
                &[
                    ("load-balancer", "consistent-hash"),
                    ("hash-on", "source-ip"),
                ],
                LoadBalancing::ConsistentHash(HashOn::SourceIp),
                0,
            ),
            (
                &[("hash-on", "cookie:session")],
                LoadBalancing::ConsistentHash(HashOn::Cookie("session".into())),
                0,
            ),
            (
                &[("hash-on", "uri")],
                LoadBalancing::ConsistentHash(HashOn::Uri),
                0,
            ),
            (
                &[("hash-on", "query:u")],
                LoadBalancing::ConsistentHash(HashOn::QueryParam("u".into())),
                0,
            ),
            (
                &[("load-balancer", "consistent-hash")],
                LoadBalancing::RoundRobin,
                1,
            ),
            (
                &[("load-balancer", "fastest")],
                LoadBalancing::RoundRobin,
                1,
            ),
            (&[("hash-on", "header:")], LoadBalancing::RoundRobin, 1),
            (
                &[("hash-on", "header:bad name")],
                LoadBalancing::RoundRobin,
                1,
            ),
            (&[("hash-on", "ip")], LoadBalancing::RoundRobin, 1),
        ];
        for (pairs, want, n_problems) in table {
            let (p, problems) = parse(Some(&annotations(pairs)));
            assert_eq!(&p.load_balancing, want, "{pairs:?}");
            assert_eq!(problems.len(), *n_problems, "{pairs:?}: {problems:?}");
        }
    }

    #[test]
    fn passive_health_values() {
        let (p, problems) = parse(Some(&annotations(&[
            ("max-failures", "5"),
            ("ejection-time", "2s"),
            ("max-ejection-time", "1m"),
        ])));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.passive,
            PassiveHealth {
                max_failures: 5,
                ejection_ms: 2_000,
                max_ejection_ms: 60_000
            }
        );
        let (p, problems) = parse(Some(&annotations(&[
            ("max-failures", "-1"),
            ("ejection-time", "0s"),
            ("max-ejection-time", "soon"),
        ])));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("portcullis.dev/max-failures"));
        assert!(problems[0].contains("\"-1\""));
        assert_eq!(p.passive, PassiveHealth::default());
        // A longest back-off below the first is raised to it.
        let (p, _) = parse(Some(&annotations(&[
            ("ejection-time", "90s"),
            ("max-ejection-time", "10s"),
        ])));
        assert_eq!(p.passive.max_ejection_ms, 90_000);
        let (p, _) = parse(Some(&annotations(&[("max-failures", "0")])));
        assert_eq!(p.passive.max_failures, 0);
    }

    #[test]
    fn active_health_values() {
        let (p, problems) = parse(Some(&annotations(&[
            ("health-check", "http:/healthz"),
            ("health-check-host", "svc.local"),
            ("health-check-interval", "2s"),
            ("health-check-timeout", "500ms"),
            ("healthy-threshold", "2"),
            ("unhealthy-threshold", "3"),
        ])));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.active,
            Some(ActiveHealth {
                check: HealthCheck::Http {
                    path: "/healthz".into(),
                    host: Some("svc.local".into())
                },
                interval_ms: 2_000,
                timeout_ms: 500,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            })
        );
        let (p, problems) = parse(Some(&annotations(&[("health-check", "tcp")])));
        assert!(problems.is_empty());
        assert_eq!(p.active.map(|a| a.check), Some(HealthCheck::Tcp));
        for bad in ["http:healthz", "udp", "http:"] {
            let (p, problems) = parse(Some(&annotations(&[("health-check", bad)])));
            assert_eq!(p.active, None, "{bad}");
            assert_eq!(problems.len(), 1, "{bad}");
        }
        let (p, problems) = parse(Some(&annotations(&[
            ("health-check", "tcp"),
            ("health-check-interval", "10ms"),
            ("healthy-threshold", "0"),
        ])));
        assert_eq!(problems.len(), 2, "{problems:?}");
        let a = p.active.expect("tcp check");
        assert_eq!(a.interval_ms, CHECK_INTERVAL_MS);
        assert_eq!(a.healthy_threshold, HEALTHY_THRESHOLD);
    }

    /// Valid settings that another annotation makes pointless are reported, not dropped in silence (found by
    /// tests/prop_translate.rs).
    #[test]
    fn settings_without_effect_are_reported() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str);
        let table: &[Case<'_>] = &[
            (&[("health-check-host", "svc.local")], "health-check-host"),
            (&[("health-check-interval", "2s")], "health-check-interval"),
            (
                &[("health-check", "udp"), ("healthy-threshold", "2")],
                "healthy-threshold",
            ),
            (
                &[("health-check", "tcp"), ("health-check-host", "svc.local")],
                "health-check-host",
            ),
            (
                &[("load-balancer", "random"), ("hash-on", "uri")],
                "hash-on",
            ),
            (
                &[("load-balancer", "fastest"), ("hash-on", "uri")],
                "hash-on",
            ),
            (
                &[("ejection-time", "90s"), ("max-ejection-time", "10s")],
                "max-ejection-time",
            ),
        ];
        for (pairs, key) in table {
            let (_, problems) = parse(Some(&annotations(pairs)));
            let key = format!("{PREFIX}{key}:");
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(&key) && p.ends_with("ignored")),
                "{pairs:?}: {problems:?}"
            );
        }
        // The same settings where they apply are not reported.
        let (p, problems) = parse(Some(&annotations(&[
            ("load-balancer", "consistent-hash"),
            ("hash-on", "uri"),
            ("health-check", "http:/h"),
            ("health-check-host", "svc.local"),
            ("ejection-time", "10s"),
            ("max-ejection-time", "90s"),
        ])));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.load_balancing, LoadBalancing::ConsistentHash(HashOn::Uri));
    }

    #[test]
    fn unknown_keys_name_the_closest() {
        let (_, problems) = parse(Some(&annotations(&[("max-failure", "3")])));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("did you mean portcullis.dev/max-failures?"),
            "{problems:?}"
        );
        let (_, problems) = parse(Some(&annotations(&[("something-else", "3")])));
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].contains("did you mean"), "{problems:?}");
    }
}
