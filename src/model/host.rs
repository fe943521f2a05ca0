//! Hostname patterns: `*` (any), `example.com` (exact) and `*.example.com` (wildcard).

use serde::{Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// A hostname pattern, always lowercase and without a port or trailing dot.
///
/// Gateway API and Ingress disagree on what a wildcard covers: a Gateway API `*.example.com` matches any number of
/// labels in front of `example.com` (`a.example.com`, `a.b.example.com`), an Ingress `*.example.com` exactly one
/// label. `single_label` records which rule applies; neither matches `example.com` itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Every hostname (no hostname given).
    Any,
    /// Exactly this hostname.
    Exact(String),
    /// Hostnames that end in `.suffix`.
    Wildcard {
        /// The part after `*.`.
        suffix: String,
        /// `true` when exactly one label may stand in front of the suffix (Ingress semantics).
        single_label: bool,
    },
}

/// Why a hostname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    /// The text is empty or longer than 253 characters.
    #[error("hostname {0:?} must be 1 to 253 characters long")]
    Length(String),
    /// An IP address was given; Ingress and Gateway API hostnames must be DNS names.
    #[error("hostname {0:?} is an IP address; a DNS name is required")]
    IpAddress(String),
    /// A label is empty, too long, or has a character outside `a-z0-9-`.
    #[error("hostname {0:?} is not a valid DNS name (labels of a-z, 0-9 and '-')")]
    Invalid(String),
    /// `*` appears other than as the whole first label.
    #[error("hostname {0:?}: a wildcard must be the whole first label, as in \"*.example.com\"")]
    Wildcard(String),
}

impl HostPattern {
    /// Parses a Gateway API hostname (a wildcard covers any number of labels).
    pub fn gateway(text: &str) -> Result<Self, HostPatternError> {
        Self::parse(text, false)
    }

    /// Parses an Ingress hostname (a wildcard covers exactly one label).
    pub fn ingress(text: &str) -> Result<Self, HostPatternError> {
        Self::parse(text, true)
    }

    fn parse(text: &str, single_label: bool) -> Result<Self, HostPatternError> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 253 {
            return Err(HostPatternError::Length(text.to_string()));
        }
        if lower.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostPatternError::IpAddress(text.to_string()));
        }
        let (wild, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        for label in rest.split('.') {
            if label.contains('*') {
                return Err(HostPatternError::Wildcard(text.to_string()));
            }
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(HostPatternError::Invalid(text.to_string()));
            }
        }
        Ok(if wild {
            HostPattern::Wildcard {
                suffix: rest.to_string(),
                single_label,
            }
        } else {
            HostPattern::Exact(lower)
        })
    }

    /// Does `host` (lowercase, no port) match this pattern?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard {
                suffix,
                single_label,
            } => match host.strip_suffix(suffix.as_str()) {
                Some(front) if front.len() >= 2 && front.ends_with('.') => {
                    let front = &front[..front.len() - 1];
                    !*single_label || !front.contains('.')
                }
                _ => false,
            },
        }
    }

    /// The intersection of a route hostname and a listener hostname (both Gateway API patterns), as the HTTPRoute
    /// spec defines it: the more specific of the two when one contains the other, `None` when they are disjoint.
    pub fn intersect(&self, other: &HostPattern) -> Option<HostPattern> {
        match (self, other) {
            (HostPattern::Any, o) | (o, HostPattern::Any) => Some(o.clone()),
            (HostPattern::Exact(a), HostPattern::Exact(b)) => (a == b).then(|| self.clone()),
            (HostPattern::Exact(e), w @ HostPattern::Wildcard { .. })
            | (w @ HostPattern::Wildcard { .. }, HostPattern::Exact(e)) => {
                w.matches(e).then(|| HostPattern::Exact(e.clone()))
            }
            (
                HostPattern::Wildcard {
                    suffix: a,
                    single_label: sa,
                },
                HostPattern::Wildcard {
                    suffix: b,
                    single_label: sb,
                },
            ) => {
                if a == b {
                    Some(HostPattern::Wildcard {
                        suffix: a.clone(),
                        single_label: *sa || *sb,
                    })
                } else if a.ends_with(&format!(".{b}")) {
                    Some(self.clone())
                } else if b.ends_with(&format!(".{a}")) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }

    /// How specific the pattern is, for ordering: exact names beat wildcards, longer beats shorter, and anything
    /// beats `Any`. This is the HTTPRoute rule "precedence must be given to rules from the HTTPRoute with the
    /// largest number of: characters in a matching non-wildcard hostname; characters in a matching hostname".
    pub fn specificity(&self) -> (u8, usize, bool) {
        match self {
            HostPattern::Any => (0, 0, false),
            HostPattern::Wildcard {
                suffix,
                single_label,
            } => (1, suffix.len() + 2, *single_label),
            HostPattern::Exact(h) => (2, h.len(), false),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard {
                suffix,
                single_label: false,
            } => write!(f, "*.{suffix}"),
            HostPattern::Wildcard {
                suffix,
                single_label: true,
            } => write!(f, "*.{suffix} (one label)"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialOrd for HostPattern {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostPattern {
    /// Most specific first, then alphabetical, so sorted lists read from specific to general.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .specificity()
            .cmp(&self.specificity())
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        assert_eq!(
            HostPattern::gateway("Foo.Example.COM.").unwrap(),
            HostPattern::Exact("foo.example.com".into())
        );
        assert_eq!(
            HostPattern::ingress("*.example.com").unwrap(),
            HostPattern::Wildcard {
                suffix: "example.com".into(),
                single_label: true
            }
        );
    }

    #[test]
    fn refuses_bad_names() {
        assert!(matches!(
            HostPattern::gateway("10.0.0.1"),
            Err(HostPatternError::IpAddress(_))
        ));
        assert!(matches!(
            HostPattern::gateway("foo.*.com"),
            Err(HostPatternError::Wildcard(_))
        ));
        assert!(matches!(
            HostPattern::gateway("*foo.com"),
            Err(HostPatternError::Wildcard(_))
        ));
        assert!(matches!(
            HostPattern::gateway("foo_bar.com"),
            Err(HostPatternError::Invalid(_))
        ));
        assert!(matches!(
            HostPattern::gateway(""),
            Err(HostPatternError::Length(_))
        ));
        assert!(matches!(
            HostPattern::gateway("a..b"),
            Err(HostPatternError::Invalid(_))
        ));
    }

    #[test]
    fn wildcard_depth_differs_between_apis() {
        let gw = HostPattern::gateway("*.example.com").unwrap();
        let ing = HostPattern::ingress("*.example.com").unwrap();
        for p in [&gw, &ing] {
            assert!(p.matches("a.example.com"));
            assert!(!p.matches("example.com"));
            assert!(!p.matches("aexample.com"));
            assert!(!p.matches(".example.com"));
        }
        assert!(gw.matches("a.b.example.com"));
        assert!(!ing.matches("a.b.example.com"));
    }

    #[test]
    fn intersection_follows_the_httproute_spec() {
        let g = |s: &str| HostPattern::gateway(s).unwrap();
        assert_eq!(
            g("*.specific.com").intersect(&g("very.specific.com")),
            Some(g("very.specific.com"))
        );
        assert_eq!(
            g("*.wildcard.io").intersect(&g("*.foo.wildcard.io")),
            Some(g("*.foo.wildcard.io"))
        );
        assert_eq!(g("wildcard.io").intersect(&g("*.wildcard.io")), None);
        assert_eq!(g("a.com").intersect(&HostPattern::Any), Some(g("a.com")));
        assert_eq!(g("*.a.com").intersect(&g("*.b.com")), None);
    }

    #[test]
    fn orders_specific_first() {
        let mut v = [
            HostPattern::Any,
            HostPattern::gateway("*.example.com").unwrap(),
            HostPattern::gateway("a.example.com").unwrap(),
            HostPattern::gateway("*.b.example.com").unwrap(),
        ];
        v.sort();
        let s: Vec<String> = v.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            s,
            ["a.example.com", "*.b.example.com", "*.example.com", "*"]
        );
    }
}
