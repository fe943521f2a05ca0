//! A hostname index whose lookup cost does not grow with the number of hosts: exact names in a hash map, wildcard
//! names by suffix (one hash lookup per label of the request host), then the catch-all.

use crate::model::HostPattern;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, unkeyed hash for hostnames. The maps it serves are built from configuration and only *looked up* with
/// request hosts, so a client cannot fill them with colliding keys (SipHash's keyed defence buys nothing here and
/// cost a third of a lookup). Word-at-a-time multiply-rotate (as rustc's FxHash), with a final avalanche so that
/// the low bits hashbrown indexes with depend on every input byte.
#[derive(Default, Clone, Copy)]
struct HostHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl HostHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(26);
    }
}

impl Hasher for HostHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i) | 0x100);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // splitmix64's finalizer.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// [`HostHasher`] over `bytes`: the router's inline header check compares header values by this hash.
pub(crate) fn bytes_hash(bytes: &[u8]) -> u64 {
    let mut h = HostHasher::default();
    h.write(bytes);
    h.finish()
}

type HostMap<V> = HashMap<Box<str>, V, BuildHasherDefault<HostHasher>>;

/// Values for the hosts of one wildcard suffix.
#[derive(Debug)]
struct WildSlot<T> {
    /// For hosts with exactly one label in front of the suffix.
    one: Option<T>,
    /// For hosts with two or more labels in front of the suffix.
    many: Option<T>,
}

/// Maps a request host to the value of the most specific pattern key that covers it.
///
/// Keys are built with [`HostIndex::build`] from the set of patterns; the value of each key is computed by the
/// caller from a *representative host*: a host that matches exactly the patterns that match every host the key
/// stands for. Representatives use `*` as a stand-in label, which no real host or exact pattern contains.
#[derive(Debug)]
pub struct HostIndex<T> {
    exact: HostMap<T>,
    wildcard: HostMap<WildSlot<T>>,
    any: Option<T>,
}

impl<T> HostIndex<T> {
    /// Builds the index for `patterns`, calling `value(key, representative_host)` once per key. The
    /// representative of the catch-all key ([`HostPattern::Any`]) is `None`.
    pub fn build<'a>(
        patterns: impl IntoIterator<Item = &'a HostPattern>,
        with_any: bool,
        mut value: impl FnMut(&HostPattern, Option<&str>) -> T,
    ) -> Self {
        let mut exact = HostMap::default();
        let mut wildcard: HostMap<WildSlot<T>> = HostMap::default();
        let mut any = None;
        let mut want_any = with_any;
        for p in patterns {
            match p {
                HostPattern::Any => want_any = true,
                HostPattern::Exact(h) => {
                    if !exact.contains_key(h.as_str()) {
                        let v = value(p, Some(h));
                        exact.insert(h.clone().into_boxed_str(), v);
                    }
                }
                HostPattern::Wildcard {
                    suffix,
                    single_label,
                } => {
                    let slot =
                        wildcard
                            .entry(suffix.clone().into_boxed_str())
                            .or_insert(WildSlot {
                                one: None,
                                many: None,
                            });
                    if slot.one.is_none() {
                        slot.one = Some(value(p, Some(&format!("*.{suffix}"))));
                    }
                    if !single_label && slot.many.is_none() {
                        slot.many = Some(value(p, Some(&format!("*.*.{suffix}"))));
                    }
                }
            }
        }
        if want_any {
            any = Some(value(&HostPattern::Any, None));
        }
        HostIndex {
            exact,
            wildcard,
            any,
        }
    }

    /// The value for `host` (lowercase, no port): the exact key, else the longest wildcard suffix that covers it,
    /// else the catch-all.
    pub fn get(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        if !self.wildcard.is_empty() {
            let mut depth = 0usize;
            for (i, b) in host.bytes().enumerate() {
                if b != b'.' {
                    continue;
                }
                depth += 1;
                let suffix = &host[i + 1..];
                if let Some(slot) = self.wildcard.get(suffix) {
                    let v = if depth == 1 {
                        slot.one.as_ref()
                    } else {
                        slot.many.as_ref()
                    };
                    if v.is_some() {
                        return v;
                    }
                }
            }
        }
        self.any.as_ref()
    }

    /// Every value in the index (for tests and diagnostics).
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact
            .values()
            .chain(
                self.wildcard
                    .values()
                    .flat_map(|s| s.one.iter().chain(s.many.iter())),
            )
            .chain(self.any.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(patterns: &[HostPattern]) -> HostIndex<String> {
        HostIndex::build(patterns, false, |_, rep| {
            let rep = rep.unwrap_or("<any>");
            // The value lists which patterns cover the representative.
            let mut v: Vec<String> = patterns
                .iter()
                .filter(|p| match rep {
                    "<any>" => **p == HostPattern::Any,
                    r => p.matches(r),
                })
                .map(|p| p.to_string())
                .collect();
            v.sort();
            v.join(",")
        })
    }

    #[test]
    fn picks_most_specific() {
        let g = |s: &str| HostPattern::gateway(s).unwrap();
        let i = |s: &str| HostPattern::ingress(s).unwrap();
        let ix = idx(&[
            g("a.example.com"),
            g("*.example.com"),
            i("*.b.example.com"),
            HostPattern::Any,
        ]);
        assert_eq!(
            ix.get("a.example.com").unwrap(),
            "*,*.example.com,a.example.com"
        );
        assert_eq!(ix.get("z.example.com").unwrap(), "*,*.example.com");
        assert_eq!(ix.get("y.z.example.com").unwrap(), "*,*.example.com");
        assert_eq!(
            ix.get("x.b.example.com").unwrap(),
            "*,*.b.example.com (one label),*.example.com"
        );
        // Two labels in front of b.example.com: the one-label Ingress wildcard does not cover it.
        assert_eq!(ix.get("w.x.b.example.com").unwrap(), "*,*.example.com");
        assert_eq!(ix.get("example.com").unwrap(), "*");
        assert_eq!(ix.get("other.org").unwrap(), "*");
    }

    #[test]
    fn host_hash_spreads_similar_names() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<HostHasher>::default();
        let n = 20_000usize;
        let mut full: Vec<u64> = (0..n)
            .map(|k| b.hash_one(format!("h{k}.bench.example.com").as_str()))
            .collect();
        // The low bits pick the bucket: similar names must not pile up in a few of them.
        let mut low: Vec<u64> = full.iter().map(|h| h & 0xffff).collect();
        full.sort_unstable();
        full.dedup();
        assert_eq!(full.len(), n);
        low.sort_unstable();
        low.dedup();
        assert!(low.len() > n * 3 / 4, "{} distinct low halves", low.len());
    }

    #[test]
    fn no_catch_all_means_none() {
        let ix = idx(&[HostPattern::gateway("a.com").unwrap()]);
        assert!(ix.get("b.com").is_none());
        assert!(ix.get("a.com").is_some());
    }
}
