//! Compiled request matches: the part of a rule that decides whether a request selects it.

use crate::model::{PathMatch, RouteMatch, StringMatch};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query string.
    pub path: &'a str,
    /// The raw query string (after `?`), if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// A compiled value condition.
#[derive(Debug)]
pub(crate) enum ValueMatcher {
    Exact(Box<str>),
    Regex(Regex),
}

impl ValueMatcher {
    fn new(m: &StringMatch) -> Result<Self, regex::Error> {
        Ok(match m {
            StringMatch::Exact(v) => ValueMatcher::Exact(v.as_str().into()),
            StringMatch::RegularExpression(r) => ValueMatcher::Regex(anchored(r)?),
        })
    }

    fn is_match(&self, v: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(e) => e.as_bytes() == v,
            ValueMatcher::Regex(r) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
        }
    }
}

fn anchored(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

#[derive(Debug)]
pub(crate) enum PathMatcher {
    Exact(Box<str>),
    /// Never ends in `/` unless it is `/`.
    Prefix(Box<str>),
    Regex(Regex),
}

/// A compiled [`RouteMatch`].
#[derive(Debug)]
pub(crate) struct Matcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Box<[(HeaderName, ValueMatcher)]>,
    query: Box<[(Box<str>, ValueMatcher)]>,
}

impl Matcher {
    /// Compiles a match. Fails only on input translation already validated (a regex, a header name).
    pub(crate) fn new(m: &RouteMatch) -> Result<Self, String> {
        let path = match &m.path {
            PathMatch::Exact(p) => PathMatcher::Exact(p.as_str().into()),
            PathMatch::Prefix(p) => PathMatcher::Prefix(p.as_str().into()),
            PathMatch::RegularExpression(r) => {
                PathMatcher::Regex(anchored(r).map_err(|e| e.to_string())?)
            }
        };
        let method = m
            .method
            .as_deref()
            .map(|s| Method::from_bytes(s.as_bytes()).map_err(|e| e.to_string()))
            .transpose()?;
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
                Ok((
                    name,
                    ValueMatcher::new(&h.value).map_err(|e| e.to_string())?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?
            .into_boxed_slice();
        let query = m
            .query_params
            .iter()
            .map(|q| {
                Ok((
                    q.name.as_str().into(),
                    ValueMatcher::new(&q.value).map_err(|e| e.to_string())?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?
            .into_boxed_slice();
        Ok(Matcher {
            path,
            method,
            headers,
            query,
        })
    }

    /// The prefix this match compares the path with, when it is a prefix match (for ReplacePrefixMatch).
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatcher::Prefix(p) => Some(p),
            _ => None,
        }
    }

    /// The literal every matching path starts with: an Exact path, or a Prefix other than `/` (a Prefix matches
    /// `p`, `p/...`: both start with `p`). `None` when there is no such literal (regex, `/`).
    pub(crate) fn literal_path(&self) -> Option<&str> {
        match &self.path {
            PathMatcher::Exact(p) => Some(p),
            PathMatcher::Prefix(p) if &**p != "/" => Some(p),
            PathMatcher::Prefix(_) | PathMatcher::Regex(_) => None,
        }
    }

    /// Does the request meet every condition?
    pub(crate) fn is_match(&self, req: &RequestParts<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Exact(p) => req.path == &**p,
            PathMatcher::Prefix(p) => prefix_matches(p, req.path),
            PathMatcher::Regex(r) => r.is_match(req.path),
        };
        if !path_ok {
            return false;
        }
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        for (name, vm) in self.headers.iter() {
            let mut values = req.headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return false;
            };
            let ok = match values.next() {
                // A repeated header is compared as its values joined with ",", as RFC 9110 section 5.3 allows
                // a recipient to combine them.
                Some(second) => {
                    let mut joined = Vec::with_capacity(64);
                    joined.extend_from_slice(first.as_bytes());
                    for v in std::iter::once(second).chain(values) {
                        joined.push(b',');
                        joined.extend_from_slice(v.as_bytes());
                    }
                    vm.is_match(&joined)
                }
                None => vm.is_match(first.as_bytes()),
            };
            if !ok {
                return false;
            }
        }
        for (name, vm) in self.query.iter() {
            match query_value(req.query, name) {
                Some(v) => {
                    if !vm.is_match(v.as_bytes()) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

/// Element-wise prefix match: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The first value of query parameter `name`, percent-decoded (`+` stays `+`: this is a URL query, not a form).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = query?;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k) == name {
            return Some(decode(v));
        }
    }
    None
}

fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Kubernetes documentation's Ingress examples table, rows about a single path's matching.
    #[test]
    fn prefix_semantics_match_the_kubernetes_table() {
        let p = |prefix: &str| PathMatch::prefix(prefix).value().to_string();
        assert!(prefix_matches(&p("/"), "/anything"));
        assert!(prefix_matches(&p("/foo"), "/foo"));
        assert!(prefix_matches(&p("/foo"), "/foo/"));
        assert!(prefix_matches(&p("/foo/"), "/foo"));
        assert!(prefix_matches(&p("/foo/"), "/foo/"));
        assert!(!prefix_matches(&p("/aaa/bb"), "/aaa/bbb"));
        assert!(prefix_matches(&p("/aaa/bbb"), "/aaa/bbb"));
        assert!(prefix_matches(&p("/aaa/bbb/"), "/aaa/bbb"));
        assert!(prefix_matches(&p("/aaa/bbb"), "/aaa/bbb/"));
        assert!(prefix_matches(&p("/aaa/bbb"), "/aaa/bbb/ccc"));
        assert!(!prefix_matches(&p("/aaa/bbb"), "/aaa/bbbxyz"));
        assert!(!prefix_matches(&p("/aaa"), "/ccc"));
        assert!(!prefix_matches(&p("/foo"), "/FOO"));
    }

    #[test]
    fn query_values_are_decoded_and_first_wins() {
        assert_eq!(query_value(Some("a=1&b=2&a=3"), "a").as_deref(), Some("1"));
        assert_eq!(query_value(Some("x=%20y"), "x").as_deref(), Some(" y"));
        assert_eq!(query_value(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_value(Some("a=1"), "b"), None);
        assert_eq!(query_value(None, "b"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }
}
