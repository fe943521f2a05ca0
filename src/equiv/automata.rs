//! Languages of match conditions as DFAs over bytes, and the exploration that turns a multi-pattern DFA into the
//! classes of texts it distinguishes, each with a shortest witness.
//!
//! Every condition is a pattern of the same regex dialect the router compiles (regex-syntax's parse, Unicode and
//! UTF-8 on, anchored at both ends); all the conditions one comparison needs go into ONE dense DFA with
//! `MatchKind::All`, so that the match state reached at the end of a text says which conditions the text meets.
//! A breadth-first walk over the DFA's states then visits every class of texts (every set of conditions a text can
//! meet at once) and the first text it reaches in each class is a shortest one.

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use std::collections::HashMap;

/// Bounds the DFA a comparison may build (bytes), so that a pathological regex is reported as undecided instead
/// of exhausting memory.
const DFA_LIMIT: usize = 64 * 1024 * 1024;
/// Bounds the states one exploration visits.
const STATE_LIMIT: usize = 2_000_000;

/// The pattern of a literal text: exactly these bytes.
pub(crate) fn literal(text: &str) -> String {
    regex_syntax::escape(text)
}

/// The pattern of a user regex, anchored at both ends as the router anchors it.
pub(crate) fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

/// Element-wise prefix: `/foo` covers `/foo`, `/foo/` and `/foo/...`, not `/foobar` (the router's
/// `prefix_matches`).
pub(crate) fn element_prefix(prefix: &str) -> String {
    if prefix == "/" {
        "(?s:.*)".to_string()
    } else {
        format!("{}(?s:/.*)?", regex_syntax::escape(prefix))
    }
}

/// A DFA over several patterns, each full-text (the walk starts anchored; patterns end with `$`).
pub(crate) struct MultiDfa {
    dfa: dense::DFA<Vec<u32>>,
    patterns: usize,
}

/// One class of texts: the conditions they meet, and a shortest member.
#[derive(Clone, Debug)]
pub(crate) struct Class {
    /// `met[i]`: pattern `i` matches every text of the class.
    pub met: Vec<bool>,
    /// A shortest text of the class.
    pub witness: Vec<u8>,
}

impl MultiDfa {
    /// Builds the DFA of `patterns` (each anchored with `$` at the end, or not: the walk checks the end of text).
    pub(crate) fn new(patterns: &[String]) -> Result<Self, String> {
        let full: Vec<String> = patterns.iter().map(|p| format!("(?:{p})\\z")).collect();
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(DFA_LIMIT))
                    .determinize_size_limit(Some(DFA_LIMIT)),
            )
            .thompson(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_many(&full)
            .map_err(|e| format!("cannot build an automaton: {e}"))?;
        Ok(MultiDfa {
            dfa,
            patterns: patterns.len(),
        })
    }

    /// The patterns a text ending in `state` meets.
    fn met_at(&self, state: StateID) -> Option<Vec<bool>> {
        let eoi = self.dfa.next_eoi_state(state);
        if !self.dfa.is_match_state(eoi) {
            return None;
        }
        let mut met = vec![false; self.patterns];
        for i in 0..self.dfa.match_len(eoi) {
            let p = self.dfa.match_pattern(eoi, i).as_usize();
            if let Some(m) = met.get_mut(p) {
                *m = true;
            }
        }
        Some(met)
    }

    /// Walks the DFA breadth first and calls `visit` once per reachable state whose texts meet some pattern, with
    /// what they meet and a shortest text reaching it (so the first visit of each class has a shortest witness).
    /// `visit` returns `false` to stop. Errors when the walk passes [`STATE_LIMIT`] states.
    pub(crate) fn walk(&self, mut visit: impl FnMut(&[bool], &[u8]) -> bool) -> Result<(), String> {
        let start = self
            .dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| format!("cannot start the automaton: {e}"))?;
        let alphabet = alphabet(&self.dfa);
        // state -> (index of the parent in `order`, byte); `order` is the visit order.
        let mut seen: HashMap<StateID, usize> = HashMap::new();
        let mut order: Vec<(StateID, usize, u8)> = vec![(start, usize::MAX, 0)];
        seen.insert(start, 0);
        let mut next = 0;
        while next < order.len() {
            let (state, _, _) = order[next];
            if let Some(met) = self.met_at(state) {
                let witness = path_to(&order, next);
                if !visit(&met, &witness) {
                    return Ok(());
                }
            }
            for &b in &alphabet {
                let to = self.dfa.next_state(state, b);
                if self.dfa.is_dead_state(to) || self.dfa.is_quit_state(to) {
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(v) = seen.entry(to) {
                    v.insert(order.len());
                    order.push((to, next, b));
                    if order.len() > STATE_LIMIT {
                        return Err(format!("the automaton has more than {STATE_LIMIT} states"));
                    }
                }
            }
            next += 1;
        }
        Ok(())
    }

    /// Every class of texts the patterns distinguish (among texts meeting pattern `universe`), each with a
    /// shortest witness.
    pub(crate) fn classes(&self, universe: usize) -> Result<Vec<Class>, String> {
        let mut out: Vec<Class> = Vec::new();
        let mut known: std::collections::HashSet<Vec<bool>> = std::collections::HashSet::new();
        self.walk(|met, witness| {
            if met.get(universe).copied().unwrap_or(false) && known.insert(met.to_vec()) {
                out.push(Class {
                    met: met.to_vec(),
                    witness: witness.to_vec(),
                });
            }
            true
        })?;
        Ok(out)
    }
}

fn path_to(order: &[(StateID, usize, u8)], mut i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while i != 0 && i != usize::MAX {
        let (_, parent, b) = order[i];
        out.push(b);
        i = parent;
    }
    out.reverse();
    out
}

/// One byte per equivalence class of the DFA, the most readable of its class (lowercase letters, then digits and
/// other visible ASCII, then the rest), ordered the same way, so that witnesses read well.
fn alphabet(dfa: &dense::DFA<Vec<u32>>) -> Vec<u8> {
    let classes = dfa.byte_classes();
    let rank = |b: u8| -> (u8, u8) {
        match b {
            b'a'..=b'z' => (0, b),
            b'0'..=b'9' => (1, b),
            b'A'..=b'Z' => (2, b),
            b'-' | b'.' | b'_' | b'~' => (3, b),
            0x21..=0x7e => (4, b),
            0x80..=0xff => (5, b),
            _ => (6, b),
        }
    };
    let mut best: HashMap<u8, u8> = HashMap::new();
    for b in 0..=255u8 {
        let c = classes.get(b);
        best.entry(c)
            .and_modify(|cur| {
                if rank(b) < rank(*cur) {
                    *cur = b;
                }
            })
            .or_insert(b);
    }
    let mut v: Vec<u8> = best.into_values().collect();
    v.sort_by_key(|&b| rank(b));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(patterns: &[&str]) -> Vec<(Vec<bool>, String)> {
        let mut p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        p.push("(?s:.*)".into());
        let u = p.len() - 1;
        let dfa = MultiDfa::new(&p).unwrap();
        dfa.classes(u)
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.met[..u].to_vec(),
                    String::from_utf8_lossy(&c.witness).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn prefix_and_exact_classes_with_shortest_witnesses() {
        let c = classes(&[&element_prefix("/foo"), &literal("/foo")]);
        let get = |m: &[bool]| c.iter().find(|(x, _)| x == m).map(|(_, w)| w.clone());
        assert_eq!(get(&[true, true]).as_deref(), Some("/foo"));
        assert_eq!(get(&[true, false]).as_deref(), Some("/foo/"));
        assert_eq!(get(&[false, false]).as_deref(), Some(""));
    }

    #[test]
    fn case_insensitive_regex_differs_from_literal() {
        let c = classes(&[&anchored("(?i:/foo)"), &literal("/foo")]);
        assert!(c
            .iter()
            .any(|(m, w)| m == &[true, false] && w.eq_ignore_ascii_case("/foo")));
    }
}
