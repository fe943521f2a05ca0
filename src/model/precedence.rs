//! Route precedence: the ONE place that decides which of several matching rules serves a request.
//!
//! The HTTPRoute spec (HTTPRouteRule.matches) says:
//!
//! > Proxy or Load Balancer routing configuration generated from HTTPRoutes MUST prioritize matches based on the
//! > following criteria, continuing on ties. Across all rules specified on applicable Routes, precedence must be
//! > given to the match having:
//! > * "Exact" path match.
//! > * "Prefix" path match with largest number of characters.
//! > * Method match.
//! > * Largest number of header matches.
//! > * Largest number of query param matches.
//! >
//! > Note: The precedence of RegularExpression path matches are implementation-specific.
//! >
//! > If ties still exist across multiple Routes, matching precedence MUST be determined in order of the following
//! > criteria, continuing on ties:
//! > * The oldest Route based on creation timestamp.
//! > * The Route appearing first in alphabetical order by "{namespace}/{name}".
//! >
//! > If ties still exist within an HTTPRoute, matching precedence MUST be granted to the FIRST matching rule (in
//! > list order) with a match meeting the above criteria.
//!
//! and (HTTPRouteSpec.hostnames):
//!
//! > In the event that multiple HTTPRoutes specify intersecting hostnames (e.g. overlapping wildcard matching and
//! > exact matching hostnames), precedence must be given to rules from the HTTPRoute with the largest number of:
//! > * Characters in a matching non-wildcard hostname.
//! > * Characters in a matching hostname.
//!
//! Our choices where the spec leaves room, all documented in `docs/routing.md`:
//! - RegularExpression paths rank after Exact and before Prefix, longer patterns first.
//! - Ingress paths take part in the same order. The Kubernetes Ingress rule ("the longest matching path wins; on
//!   equal length Exact beats Prefix") gives the same answer for every request, because an Exact path that matches
//!   is always at least as long as any matching prefix.
//! - On a complete tie between an HTTPRoute and an Ingress, the HTTPRoute wins, so a team can move one path at a
//!   time from Ingress to Gateway API; the shadowed Ingress path is reported.

use super::{HostPattern, HttpRule, Origin, OriginKind, PathMatch, RouteMatch};
use std::cmp::{Ordering, Reverse};
use std::hash::{Hash, Hasher};

/// A match compared by value, for finding rules that match exactly the same requests.
#[derive(Clone, Copy, Debug)]
pub struct MatchKey<'a>(pub &'a RouteMatch);

impl PartialEq for MatchKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for MatchKey<'_> {}
impl Hash for MatchKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// The part of the order that depends on the match alone; larger is more specific.
///
/// GRPCRoute matches are ranked by GRPCRoute's own rule (GRPCRouteRule.matches):
///
/// > Precedence MUST be given to the rule with the largest number of:
/// > * Characters in a matching non-wildcard hostname.
/// > * Characters in a matching hostname.
/// > * Characters in a matching service.
/// > * Characters in a matching method.
/// > * Header matches.
///
/// (the hostnames are [`host_rank`]). Our choices: a regular expression counts its pattern's characters, and on
/// a tie an exact service/method goes before a regular expression. GRPCRoute and HTTPRoute rules never share a
/// hostname on one listener (translation refuses one of the two routes, as GRPCRouteSpec.hostnames requires), so
/// the two ranks meet only next to Ingress paths, which take part under every listener hostname: there a
/// GRPCRoute rule goes first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum MatchRank {
    /// HTTPRoute and Ingress: path kind and length, method, header count, query count.
    Http((u8, usize), bool, usize, usize),
    /// GRPCRoute: service characters, method characters, header count, exact before regular expression.
    Grpc(usize, usize, usize, bool),
}

fn match_rank(rule: &HttpRule, index: usize) -> MatchRank {
    let m = &rule.matches[index];
    if rule.origin.kind == OriginKind::GrpcRoute {
        let g = m.grpc.as_ref();
        let len = |v: Option<&String>| v.map_or(0, |v| v.len());
        return MatchRank::Grpc(
            len(g.and_then(|g| g.service.as_ref())),
            len(g.and_then(|g| g.method.as_ref())),
            m.headers.len(),
            g.is_none_or(|g| !g.regex),
        );
    }
    let path = match &m.path {
        PathMatch::Exact(v) => (3u8, v.len()),
        PathMatch::RegularExpression(v) => (2, v.len()),
        PathMatch::Prefix(v) => (1, v.len()),
    };
    MatchRank::Http(
        path,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// `{namespace}/{name}`, ordered as that string is (the spec's words), without building it: comparing the
/// (namespace, name) pair instead would put `team/x` before `team-a/x`, although `-` sorts before `/`.
#[derive(PartialEq, Eq)]
struct QualifiedName<'a>(&'a str, &'a str);

impl QualifiedName<'_> {
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(self.1.bytes())
    }
}

impl PartialOrd for QualifiedName<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QualifiedName<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

/// The tie-breaks between rules once their matches rank equal: Gateway API routes before Ingress, then the oldest object
/// (objects without a creation time count as newest), then `namespace/name`, then rule order.
fn origin_rank(r: &HttpRule) -> impl Ord + '_ {
    (
        r.origin.kind == OriginKind::Ingress,
        r.origin.created.is_none(),
        r.origin.created,
        QualifiedName(&r.origin.namespace, &r.origin.name),
        r.origin.rule,
    )
}

/// How specific a matching hostname is, as the spec counts it: exact before wildcard before none, then the number
/// of characters. Whether a wildcard covers one label (Ingress) or several (Gateway API) does not count: the two
/// tie, so that a tie between an Ingress and an HTTPRoute on `*.example.com` is decided like one on an exact host.
fn host_rank(h: &HostPattern) -> (u8, usize) {
    let (kind, len, _single_label) = h.specificity();
    (kind, len)
}

/// Is this rule one of ingress-nginx's locations: a path of a taken-over Ingress (the ingress-nginx profile), or of
/// an HTTPRoute that asks for that profile (`portcullis.dev/ingress-nginx-profile: ingress-nginx`)? Exactly those
/// rules carry ingress-nginx's forwarded-header handling ([`super::policy::Policy::forwarded`]).
pub fn is_ingress_nginx_location(r: &HttpRule) -> bool {
    ingress_nginx_policy(r).is_some()
}

/// The policy of an ingress-nginx location ([`is_ingress_nginx_location`]).
fn ingress_nginx_policy(r: &HttpRule) -> Option<&super::policy::Policy> {
    r.filters.iter().find_map(|f| match f {
        super::Filter::Policy(p) if p.forwarded.is_some() => Some(&**p),
        _ => None,
    })
}

/// ingress-nginx renders one nginx `server` per hostname, and a request that no location of its server matches is
/// answered by that server's default location (the default backend), never by a less specific server. Given every
/// rule whose hostname covers a request's host (one listener group), this is the server the search stops at: the
/// most specific of those hostnames (ranked as the spec ranks them), when at least one rule of that hostname is an
/// ingress-nginx location. Every rule of that hostname still takes part, whatever its source; rules of less
/// specific hostnames do not. `None`: the spec's ordering holds (every covering rule, then the default backend).
/// A catch-all hostname stops nothing (there is nothing less specific).
#[derive(Clone, Copy, Debug)]
pub struct Server<'a> {
    rank: (u8, usize),
    /// The Ingress (`namespace/name`) whose server this is: ingress-nginx builds a host's server from the oldest
    /// Ingress that names the host. It is the policy scope of the oldest ingress-nginx rule of the hostname: the
    /// Ingress itself, or the Ingress an HTTPRoute written by `portcullis migrate` continues
    /// (`portcullis.dev/ingress-nginx-scope`).
    owner: &'a str,
}

impl<'a> Server<'a> {
    /// The server a host's search stops at, from the rules covering the host (see [`Server`]).
    pub fn of(covering: impl IntoIterator<Item = (&'a HostPattern, &'a HttpRule)>) -> Option<Self> {
        let mut top = (0u8, 0usize);
        let mut owner: Option<(&'a Origin, &'a str)> = None;
        for (h, r) in covering {
            let rank = host_rank(h);
            if rank > top {
                top = rank;
                owner = None;
            }
            if rank != top {
                continue;
            }
            if let Some(p) = ingress_nginx_policy(r) {
                if owner.is_none_or(|(o, _)| age_rank(&r.origin) < age_rank(o)) {
                    owner = Some((&r.origin, p.source.as_str()));
                }
            }
        }
        if top.0 == 0 {
            return None;
        }
        owner.map(|(_, owner)| Server { rank: top, owner })
    }

    /// Does a rule of hostname `h` (one covering the host) take part?
    pub fn includes(&self, h: &HostPattern) -> bool {
        host_rank(h) == self.rank
    }

    /// Does the listener's default backend `default` answer what no rule of the server matches? Only when it is
    /// the `spec.defaultBackend` of the Ingress that owns the server (ingress-nginx makes an Ingress's default
    /// backend the default location of the servers it creates); otherwise 404, the answer of ingress-nginx's own
    /// default backend.
    pub fn default_serves(&self, default: &HttpRule) -> bool {
        default.origin.kind == OriginKind::Ingress
            && self.owner.split_once('/')
                == Some((
                    default.origin.namespace.as_str(),
                    default.origin.name.as_str(),
                ))
    }
}

/// Older first (objects without a creation time last), then `namespace/name`.
fn age_rank(o: &Origin) -> impl Ord + '_ {
    (
        o.created.is_none(),
        o.created,
        QualifiedName(&o.namespace, &o.name),
    )
}

/// Orders (host, rule, match index) entries so that the first entry that matches a request is the one that must
/// serve it. `Ordering::Less` means `a` takes precedence.
pub fn compare(
    a: (&HostPattern, &HttpRule, usize),
    b: (&HostPattern, &HttpRule, usize),
) -> Ordering {
    let (ah, ar, ai) = a;
    let (bh, br, bi) = b;
    Reverse(host_rank(ah))
        .cmp(&Reverse(host_rank(bh)))
        .then_with(|| Reverse(match_rank(ar, ai)).cmp(&Reverse(match_rank(br, bi))))
        .then_with(|| origin_rank(ar).cmp(&origin_rank(br)))
        .then_with(|| ai.cmp(&bi))
}

/// For two rules with an identical match on the same host: does `a` win over `b`?
pub fn tie_winner(a: &HttpRule, b: &HttpRule) -> bool {
    origin_rank(a) < origin_rank(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, BackendGroup, HeaderMatch, Origin, StringMatch};

    fn rule(kind: OriginKind, name: &str, created: Option<i64>, m: RouteMatch) -> HttpRule {
        HttpRule {
            origin: Origin {
                kind,
                namespace: "ns".into(),
                name: name.into(),
                rule: 0,
                rule_name: None,
                created,
            },
            matches: vec![m],
            filters: vec![],
            action: Action::Forward(BackendGroup { backends: vec![] }),
            timeouts: Default::default(),
            retry: None,
            grpc: false,
            session: None,
        }
    }

    fn path(p: PathMatch) -> RouteMatch {
        RouteMatch {
            path: p,
            ..RouteMatch::any()
        }
    }

    fn order(rules: &[HttpRule]) -> Vec<&str> {
        let host = HostPattern::Any;
        let mut v: Vec<&HttpRule> = rules.iter().collect();
        v.sort_by(|a, b| compare((&host, a, 0), (&host, b, 0)));
        v.iter().map(|r| r.origin.name.as_str()).collect()
    }

    #[test]
    fn exact_then_regex_then_longest_prefix() {
        let k = OriginKind::HttpRoute;
        let rules = [
            rule(
                k,
                "prefix-short",
                None,
                path(PathMatch::Prefix("/a".into())),
            ),
            rule(
                k,
                "prefix-long",
                None,
                path(PathMatch::Prefix("/a/b".into())),
            ),
            rule(k, "exact", None, path(PathMatch::Exact("/a".into()))),
            rule(
                k,
                "regex",
                None,
                path(PathMatch::RegularExpression("/a.*".into())),
            ),
        ];
        assert_eq!(
            order(&rules),
            ["exact", "regex", "prefix-long", "prefix-short"]
        );
    }

    #[test]
    fn method_then_headers_then_query() {
        let k = OriginKind::HttpRoute;
        let hm = |n: &str| HeaderMatch {
            name: n.into(),
            value: StringMatch::Exact("x".into()),
        };
        let mut with_method = RouteMatch::any();
        with_method.method = Some("GET".into());
        let mut two_headers = RouteMatch::any();
        two_headers.headers = vec![hm("a"), hm("b")];
        let mut one_header = RouteMatch::any();
        one_header.headers = vec![hm("a")];
        let rules = [
            rule(k, "one-header", None, one_header),
            rule(k, "plain", None, RouteMatch::any()),
            rule(k, "two-headers", None, two_headers),
            rule(k, "method", None, with_method),
        ];
        assert_eq!(
            order(&rules),
            ["method", "two-headers", "one-header", "plain"]
        );
    }

    #[test]
    fn ties_go_to_httproute_then_oldest_then_name() {
        let m = || path(PathMatch::Prefix("/x".into()));
        let rules = [
            rule(OriginKind::Ingress, "ingress-old", Some(1), m()),
            rule(OriginKind::HttpRoute, "route-b", Some(5), m()),
            rule(OriginKind::HttpRoute, "route-a", Some(5), m()),
            rule(OriginKind::HttpRoute, "route-old", Some(2), m()),
            rule(OriginKind::HttpRoute, "route-no-time", None, m()),
        ];
        assert_eq!(
            order(&rules),
            [
                "route-old",
                "route-a",
                "route-b",
                "route-no-time",
                "ingress-old"
            ]
        );
        assert!(tie_winner(&rules[1], &rules[0]));
    }

    #[test]
    fn specific_hosts_first() {
        let k = OriginKind::HttpRoute;
        let exact = HostPattern::gateway("a.example.com").unwrap();
        let wild = HostPattern::gateway("*.example.com").unwrap();
        let r1 = rule(k, "wild", None, path(PathMatch::Exact("/long/path".into())));
        let r2 = rule(k, "exact", None, RouteMatch::any());
        assert_eq!(compare((&exact, &r2, 0), (&wild, &r1, 0)), Ordering::Less);
    }
}
