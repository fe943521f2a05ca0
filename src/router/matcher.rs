//! Compiled request matches: the part of a rule that decides whether a request selects it.

use crate::model::{PathMatch, RouteMatch, StringMatch};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use regex_automata::dfa::Automaton;
use regex_automata::util::primitives::StateID;
use std::collections::HashMap;
use std::sync::Arc;

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

/// A compiled value condition (a header or query parameter value).
#[derive(Debug)]
pub(crate) enum ValueMatcher {
    Exact(Box<str>),
    /// The same compiled form as a path regex: anchored at both ends of the value.
    Regex(Arc<CompiledRegex>),
}

impl ValueMatcher {
    fn new(m: &StringMatch, compiler: &mut MatchCompiler<'_>) -> Result<Self, regex::Error> {
        Ok(match m {
            StringMatch::Exact(v) => ValueMatcher::Exact(v.as_str().into()),
            StringMatch::RegularExpression(r) => ValueMatcher::Regex(compiler.compile(r)?),
        })
    }

    fn is_match(&self, v: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(e) => e.as_bytes() == v,
            ValueMatcher::Regex(r) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
        }
    }
}

fn anchored_pattern(re: &str) -> String {
    format!("^(?:{re})$")
}

/// A regex's DFA is kept only while it is this small (bytes): regexes of 10k routes then cost at most ~40 MB, and
/// most real patterns (`/api/v[0-9]+/.*`) need well under 1 KB in the sparse form.
const DFA_MAX_BYTES: usize = 4 * 1024;
/// Bounds the work of building a regex's DFA (determinization can grow exponentially).
const DFA_BUILD_LIMIT: usize = 256 * 1024;

/// A compiled regex of a match condition (a path, a header value or a query parameter value), anchored at both
/// ends of the text.
///
/// When the anchored pattern determinizes into a small DFA, the DFA is all the router keeps: a match reads a few
/// hundred contiguous bytes and needs no cache, where `Regex` keeps a lazy-DFA cache per pattern that a table of
/// thousands of seldom-seen hosts leaves cold (the router's lookup then slowed with table size). The dense form
/// (one table read per byte) is kept when it fits in [`DFA_MAX_BYTES`], else the sparse form (4-6x smaller,
/// a short search per byte). Patterns the DFA cannot take (a Unicode word boundary) or that outgrow the limit
/// (Unicode classes such as `\w` often do) keep the `regex` crate. All three are built by regex-automata from the
/// same regex-syntax parse, so they accept the same paths.
///
/// A DFA keeps the state it reaches after the pattern's literal prefix (`head` of [`CompiledRegex`], which
/// every match starts with): a match compares the prefix bytes and walks the DFA over the rest of the path only,
/// so a lookup in a big, cold table touches fewer of the DFA's rows (the start table and the prefix's states are
/// never read).
#[derive(Debug)]
pub(crate) enum RegexForm {
    Dense {
        dfa: regex_automata::dfa::dense::DFA<Vec<u32>>,
        after_head: StateID,
        /// Bit `i` is set when the DFA's state `i` (`StateID >> stride2`), reached from `after_head`, accepts at
        /// the end of the text; `None` when one of those states is numbered 64 or more. Read instead of the
        /// end-of-input transition, it spares a lookup in a cold table the last state's row and the byte-class
        /// entry of the end of input (two cache misses).
        eoi_match: Option<u64>,
    },
    Sparse {
        dfa: regex_automata::dfa::sparse::DFA<Vec<u8>>,
        after_head: StateID,
    },
    Regex(Regex),
}

impl RegexForm {
    /// Compiles the anchored `pattern`, given its parse when it parsed (a pattern that does not parse is left to
    /// `Regex::new`, which reports why) and the literal prefix every match starts with.
    fn from_parsed(
        pattern: &str,
        hir: Option<&regex_syntax::hir::Hir>,
        head: &[u8],
    ) -> Result<Self, regex::Error> {
        if let Some(dfa) = hir.and_then(|hir| RegexForm::dfa(hir, head)) {
            return Ok(dfa);
        }
        Ok(RegexForm::Regex(Regex::new(pattern)?))
    }

    /// The dense DFA of `hir` if it fits in [`DFA_MAX_BYTES`], else its sparse form if that fits.
    fn dfa(hir: &regex_syntax::hir::Hir, head: &[u8]) -> Option<Self> {
        use regex_automata::dfa::{dense, StartKind};
        use regex_automata::nfa::thompson;
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .which_captures(thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(DFA_BUILD_LIMIT)),
            )
            .build_from_hir(hir)
            .ok()?;
        let config = dense::Config::new()
            .start_kind(StartKind::Anchored)
            .dfa_size_limit(Some(DFA_BUILD_LIMIT))
            .determinize_size_limit(Some(DFA_BUILD_LIMIT));
        let dfa = dense::Builder::new()
            .configure(config)
            .build_from_nfa(&nfa)
            .ok()?;
        if dfa.memory_usage() <= DFA_MAX_BYTES {
            let after_head = state_after(&dfa, head)?;
            let eoi_match = eoi_matches(&dfa, after_head);
            return Some(RegexForm::Dense {
                dfa,
                after_head,
                eoi_match,
            });
        }
        let dfa = dfa.to_sparse().ok()?;
        if dfa.memory_usage() > DFA_MAX_BYTES {
            return None;
        }
        let after_head = state_after(&dfa, head)?;
        Some(RegexForm::Sparse { dfa, after_head })
    }

    /// Does the whole text match? `head` is the prefix the DFA's `after_head` state was computed for.
    fn is_match(&self, text: &str, head: &[u8]) -> bool {
        let rest = || text.as_bytes().strip_prefix(head);
        match self {
            RegexForm::Dense {
                dfa,
                after_head,
                eoi_match: Some(bits),
            } => rest().is_some_and(|rest| {
                // Every state the walk reaches has a bit (`eoi_matches` visits all of them).
                walk(dfa, *after_head, rest)
                    .and_then(|s| bits.checked_shr(state_number(dfa, s)?))
                    .is_some_and(|b| b & 1 == 1)
            }),
            RegexForm::Dense {
                dfa,
                after_head,
                eoi_match: None,
            } => rest().is_some_and(|rest| dfa_matches_from(dfa, *after_head, rest)),
            RegexForm::Sparse { dfa, after_head } => {
                rest().is_some_and(|rest| dfa_matches_from(dfa, *after_head, rest))
            }
            RegexForm::Regex(re) => re.is_match(text),
        }
    }
}

/// The state an anchored search of `dfa` is in after reading `head` from the start of the text (`None` only if
/// the DFA has no anchored start state, which the build configuration rules out).
fn state_after(dfa: &impl Automaton, head: &[u8]) -> Option<StateID> {
    let config = regex_automata::util::start::Config::new().anchored(regex_automata::Anchored::Yes);
    let start = dfa.start_state(&config).ok()?;
    Some(head.iter().fold(start, |s, &b| dfa.next_state(s, b)))
}

/// The state the anchored DFA reaches from `state` over `rest`, or `None` when it dies on the way (no quit bytes
/// are configured, so a quit state cannot occur; one would count as no match too).
#[inline]
fn walk(dfa: &impl Automaton, mut state: StateID, rest: &[u8]) -> Option<StateID> {
    for &b in rest {
        state = dfa.next_state(state, b);
        if dfa.is_special_state(state) && (dfa.is_dead_state(state) || dfa.is_quit_state(state)) {
            return None;
        }
    }
    Some(state)
}

/// Does the anchored DFA, in state `state`, accept `rest` as the end of the text? The pattern ends in `$`, so a
/// match can only be seen after the end of input; a dead state ends the walk early.
fn dfa_matches_from(dfa: &impl Automaton, state: StateID, rest: &[u8]) -> bool {
    walk(dfa, state, rest).is_some_and(|s| dfa.is_match_state(dfa.next_eoi_state(s)))
}

/// The number of a dense DFA's state (its index in the transition table), the bit `eoi_matches` gives it.
#[inline]
fn state_number(dfa: &regex_automata::dfa::dense::DFA<Vec<u32>>, s: StateID) -> Option<u32> {
    u32::try_from(s.as_usize() >> dfa.stride2()).ok()
}

/// Which states reachable from `from` accept at the end of the text, as a bitset by state number (see
/// `RegexForm::Dense`); `None` when a reachable state is numbered 64 or more.
fn eoi_matches(dfa: &regex_automata::dfa::dense::DFA<Vec<u32>>, from: StateID) -> Option<u64> {
    let bit = |s: StateID| 1u64.checked_shl(state_number(dfa, s)?);
    let mut seen = bit(from)?;
    let mut todo = vec![from];
    let mut bits = 0u64;
    while let Some(s) = todo.pop() {
        if dfa.is_match_state(dfa.next_eoi_state(s)) {
            bits |= bit(s)?;
        }
        for b in dfa
            .byte_classes()
            .representatives(..)
            .filter_map(|u| u.as_u8())
        {
            let next = dfa.next_state(s, b);
            let nb = bit(next)?;
            if seen & nb == 0 {
                seen |= nb;
                todo.push(next);
            }
        }
    }
    Some(bits)
}

/// Compiled regexes by pattern (as written in the route, before anchoring).
pub(crate) type CompiledRegexes = HashMap<Box<str>, Arc<CompiledRegex>>;

/// A regex with the necessary condition of its match (see [`regex_hint`]), which the router's inline check uses
/// (the minimum length and prefix of a path regex, the first bytes of a header-value regex's prefix).
#[derive(Debug)]
pub(crate) struct CompiledRegex {
    re: RegexForm,
    /// Every text the regex matches is at least this many bytes long ...
    min_len: usize,
    /// ... and starts with these bytes (the literal prefix regex-syntax finds; often empty).
    head: Box<[u8]>,
}

impl CompiledRegex {
    /// Compiles the user's pattern `re`, anchored at both ends of the text. One parse serves the inline-check
    /// hint and the DFA.
    fn new(re: &str) -> Result<Self, regex::Error> {
        let pattern = anchored_pattern(re);
        let hir = regex_syntax::parse(&pattern).ok();
        let (min_len, head) = hir.as_ref().map_or((0, Box::default()), regex_hint);
        Ok(CompiledRegex {
            re: RegexForm::from_parsed(&pattern, hir.as_ref(), &head)?,
            min_len,
            head,
        })
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text, &self.head)
    }
}

/// Compiles the regexes of one router (paths, header and query values), taking those of the previous router when
/// their pattern is the same: a rebuild of a table of thousands of regex routes then compiles only the patterns
/// that changed (a DFA costs about 30 µs to build; 10k of them were most of a rebuild). Equal patterns share one
/// compiled regex. It also shares one copy of each header name among the matches of the router, so that a lookup
/// reads the same bytes whichever entry it reaches.
pub(crate) struct MatchCompiler<'p> {
    previous: Option<&'p CompiledRegexes>,
    compiled: CompiledRegexes,
    header_names: HashMap<Box<str>, HeaderName>,
}

impl<'p> MatchCompiler<'p> {
    pub(crate) fn new(previous: Option<&'p CompiledRegexes>) -> Self {
        MatchCompiler {
            previous,
            compiled: HashMap::new(),
            header_names: HashMap::new(),
        }
    }

    /// The header name `name`, one shared copy per name.
    fn header_name(&mut self, name: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
        if let Some(n) = self.header_names.get(name) {
            return Ok(n.clone());
        }
        let n = HeaderName::from_bytes(name.as_bytes())?;
        self.header_names.insert(name.into(), n.clone());
        Ok(n)
    }

    fn compile(&mut self, re: &str) -> Result<Arc<CompiledRegex>, regex::Error> {
        if let Some(r) = self.compiled.get(re) {
            return Ok(r.clone());
        }
        let r = match self.previous.and_then(|p| p.get(re)) {
            Some(r) => r.clone(),
            None => Arc::new(CompiledRegex::new(re)?),
        };
        self.compiled.insert(re.into(), r.clone());
        Ok(r)
    }

    /// The regexes this router holds, for the next one.
    pub(crate) fn finish(self) -> CompiledRegexes {
        self.compiled
    }
}

#[derive(Debug)]
pub(crate) enum PathMatcher {
    /// Prefix `/`: every path.
    Any,
    Exact(Box<str>),
    /// Never ends in `/` unless it is `/`.
    Prefix(Box<str>),
    Regex(Arc<CompiledRegex>),
}

/// What every path matched by `hir` (an anchored pattern, parsed) has: a minimum length and a literal prefix.
/// Derived by regex-syntax (the parser the `regex` crate itself uses), so it is sound by construction:
/// its prefix-literal contract is that every match starts with one of the extracted literals, and the pattern is
/// anchored at the start of the path. Anything it cannot tell gives `(0, [])`, a check that never rejects.
fn regex_hint(hir: &regex_syntax::hir::Hir) -> (usize, Box<[u8]>) {
    use regex_syntax::hir::literal::Extractor;
    let min_len = hir.properties().minimum_len().unwrap_or(0);
    let seq = Extractor::new().extract(hir);
    let head = seq.longest_common_prefix().unwrap_or(&[]).into();
    (min_len, head)
}

/// What a header's value must be for a match to hold (see [`Matcher::header_hint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderHint<'a> {
    /// Exactly these bytes.
    Exact(&'a [u8]),
    /// Starting with these bytes.
    Starts(&'a [u8]),
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
    pub(crate) fn new(m: &RouteMatch, compiler: &mut MatchCompiler<'_>) -> Result<Self, String> {
        let path = match &m.path {
            PathMatch::Exact(p) => PathMatcher::Exact(p.as_str().into()),
            PathMatch::Prefix(p) if p.as_str() == "/" => PathMatcher::Any,
            PathMatch::Prefix(p) => PathMatcher::Prefix(p.as_str().into()),
            PathMatch::RegularExpression(r) => {
                PathMatcher::Regex(compiler.compile(r).map_err(|e| e.to_string())?)
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
                let name = compiler.header_name(&h.name).map_err(|e| e.to_string())?;
                Ok((
                    name,
                    ValueMatcher::new(&h.value, compiler).map_err(|e| e.to_string())?,
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
                    ValueMatcher::new(&q.value, compiler).map_err(|e| e.to_string())?,
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
            PathMatcher::Any => Some("/"),
            PathMatcher::Prefix(p) => Some(p),
            _ => None,
        }
    }

    /// A necessary condition of the path match: every matching path is at least `.0` bytes long and starts
    /// with `.1`. An Exact path is both; a Prefix other than `/` too (it matches `p` and `p/...`); a regex gives
    /// what [`regex_hint`] finds; `/` gives nothing.
    pub(crate) fn path_hint(&self) -> (usize, &[u8]) {
        match &self.path {
            PathMatcher::Exact(p) => (p.len(), p.as_bytes()),
            PathMatcher::Prefix(p) => (p.len(), p.as_bytes()),
            PathMatcher::Any => (0, &[]),
            PathMatcher::Regex(r) => (r.min_len, &r.head),
        }
    }

    /// The header condition the router's inline check uses: the first header this match requires to have an
    /// exact value, else the first whose regex requires a literal prefix (a necessary condition, see
    /// [`regex_hint`]).
    pub(crate) fn header_hint(&self) -> Option<(&HeaderName, HeaderHint<'_>)> {
        let exact = self.headers.iter().find_map(|(name, vm)| match vm {
            ValueMatcher::Exact(v) => Some((name, HeaderHint::Exact(v.as_bytes()))),
            ValueMatcher::Regex(_) => None,
        });
        exact.or_else(|| {
            self.headers.iter().find_map(|(name, vm)| match vm {
                ValueMatcher::Regex(r) if !r.head.is_empty() => {
                    Some((name, HeaderHint::Starts(&r.head)))
                }
                _ => None,
            })
        })
    }

    /// Does the path meet the path condition?
    #[inline]
    pub(crate) fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => path == &**p,
            PathMatcher::Prefix(p) => prefix_matches(p, path),
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }

    /// The path regex, if the path condition is one.
    pub(crate) fn path_regex(&self) -> Option<&Arc<CompiledRegex>> {
        match &self.path {
            PathMatcher::Regex(r) => Some(r),
            _ => None,
        }
    }

    /// Does the request meet every condition other than the path's?
    #[inline]
    pub(crate) fn is_match_but_path(&self, req: &RequestParts<'_>) -> bool {
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

    /// Path regexes with literal prefixes, alternatives, case folding, Unicode and repetition.
    const SAMPLE_PATTERNS: &[&str] = &[
        "/api/v[0-9]+/.*",
        "/foo/a|/foo/b",
        "(?i)/Foo/bar",
        "/caf\u{e9}/.+",
        "/x{2,3}y",
        "(/a|/ab)c?",
        "/[^/]+/items/[0-9]{1,4}",
        ".*\\.png",
    ];

    /// Paths that exercise [`SAMPLE_PATTERNS`], matching and not.
    const SAMPLE_PATHS: &[&str] = &[
        "/",
        "/api/v1/",
        "/api/v12/x",
        "/api/vx/",
        "/foo/a",
        "/foo/b",
        "/foo/c",
        "/FOO/BAR",
        "/foo/bar",
        "/caf\u{e9}/1",
        "/cafe/1",
        "/xxy",
        "/xxxy",
        "/xy",
        "/a",
        "/ab",
        "/abc",
        "/ac",
        "/shop/items/42",
        "/shop/items/",
        "/img/a.png",
        "a.png",
        "",
    ];

    /// The DFA form of a path regex accepts exactly the paths the `regex` crate accepts, and patterns the DFA
    /// cannot take keep the `regex` crate.
    #[test]
    fn path_regex_dfa_agrees_with_regex() {
        let patterns = SAMPLE_PATTERNS.iter().copied().chain([
            "/r1/[a-z]+/[0-9]+",
            "/\\w+/",
            "/[[:alpha:]]+",
            "/[a-z]{2,8}/[0-9]{1,6}/(edit|view|delete)",
            "(?i)/static/.+\\.(css|js|png)",
            "/exact",
            "",
            // A dense DFA with more than 64 states (no end-of-input bitset).
            "/a{70}",
        ]);
        let a70 = format!("/{}", "a".repeat(70));
        let a71 = format!("{a70}a");
        let paths: Vec<&str> = SAMPLE_PATHS
            .iter()
            .copied()
            .chain([
                "/r1/abc/42",
                "/r1/abc/42/",
                "/r1//42",
                "/\u{e9}t\u{e9}/",
                "/word/",
                "/Zeta",
                "/line\nfeed",
                "/ab/123/edit",
                "/abcdefghi/1/view",
                "/ab/1234567/delete",
                "/STATIC/app.CSS",
                "/static/.png",
                "/static/a/b.js",
                // Shorter than, equal to and longer than a literal prefix the DFA starts after.
                "/r",
                "/api/v",
                "/exact",
                "/exactly",
                &a70,
                &a70[..70],
                &a70[..40],
                &a71,
            ])
            .collect();
        let (mut dense, mut sparse, mut regexes) = (0, 0, 0);
        let (mut with_bits, mut without_bits) = (0, 0);
        for pat in patterns {
            let re = Regex::new(&anchored_pattern(pat)).expect("valid");
            let compiled = CompiledRegex::new(pat).expect("valid");
            match compiled.re {
                RegexForm::Dense { eoi_match, .. } => {
                    dense += 1;
                    match eoi_match {
                        Some(_) => with_bits += 1,
                        None => without_bits += 1,
                    }
                }
                RegexForm::Sparse { .. } => sparse += 1,
                RegexForm::Regex(_) => regexes += 1,
            }
            for &path in &paths {
                assert_eq!(
                    compiled.is_match(path),
                    re.is_match(path),
                    "{pat:?} on {path:?}"
                );
            }
        }
        // Every form is exercised, and most patterns get a DFA.
        assert!(
            dense >= 8 && sparse >= 2 && regexes >= 1,
            "dense {dense}, sparse {sparse}, regex {regexes}"
        );
        assert!(
            with_bits >= 7 && without_bits >= 1,
            "dense with end-of-input bits {with_bits}, without {without_bits}"
        );
        // A Unicode word boundary has no DFA; a pattern whose DFA is too big keeps the regex crate.
        assert!(matches!(
            CompiledRegex::new("/\\bx").expect("valid").re,
            RegexForm::Regex(_)
        ));
        assert!(matches!(
            CompiledRegex::new("/\\w{20}[0-9]{1,8}\\w+")
                .expect("valid")
                .re,
            RegexForm::Regex(_)
        ));
        assert!(CompiledRegex::new("/(unclosed").is_err());
    }

    /// The hint of the user's pattern `re`, anchored as the router compiles it.
    fn parsed_hint(re: &str) -> (usize, Box<[u8]>) {
        regex_hint(&regex_syntax::parse(&anchored_pattern(re)).expect("valid"))
    }

    fn hint(re: &str) -> (usize, Vec<u8>) {
        let (n, head) = parsed_hint(re);
        (n, head.into_vec())
    }

    #[test]
    fn regex_hints_are_the_literal_prefix_and_minimum_length() {
        assert_eq!(hint("/api/v[0-9]+/.*"), (8, b"/api/v".to_vec()));
        assert_eq!(hint("/r12/[a-z]+"), (6, b"/r12/".to_vec()));
        assert_eq!(hint("/exact"), (6, b"/exact".to_vec()));
        // Alternatives share only their common prefix; case-insensitive letters fork the literals.
        assert_eq!(hint("/foo/a|/foo/b"), (6, b"/foo/".to_vec()));
        assert_eq!(hint("(?i)/Foo"), (4, b"/".to_vec()));
        // Nothing literal up front, or an empty match allowed: no check.
        assert_eq!(hint(".*"), (0, vec![]));
        assert_eq!(hint("[a-z]*/x"), (2, vec![]));
        assert_eq!(hint("(/a)?"), (0, vec![]));
    }

    /// The inline check never rejects a path the regex accepts (the router relies on it to skip regexes).
    #[test]
    fn regex_hints_never_reject_a_match() {
        let (patterns, paths) = (SAMPLE_PATTERNS, SAMPLE_PATHS);
        let mut matched = 0;
        for pat in patterns {
            let re = Regex::new(&anchored_pattern(pat)).expect("valid");
            let (min_len, head) = parsed_hint(pat);
            for path in paths {
                if re.is_match(path) {
                    matched += 1;
                    assert!(
                        path.len() >= min_len,
                        "{pat:?} matches {path:?} shorter than {min_len}"
                    );
                    assert!(
                        path.as_bytes().starts_with(&head),
                        "{pat:?} matches {path:?} without {head:?}"
                    );
                }
            }
        }
        assert!(
            matched >= 12,
            "the sample paths should exercise the patterns ({matched} matches)"
        );
    }
}
