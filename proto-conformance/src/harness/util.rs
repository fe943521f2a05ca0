//! Small helpers without I/O: a seedable PRNG (no crate needed for test data), UUIDs, pod names, Go's
//! canonical header names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: a tiny, fast, seedable generator. Good enough for request ids and pod-name hashes; not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed (the same seed gives the same sequence).
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the clock, the process id and a process-wide counter (so two calls in the same
    /// nanosecond still differ).
    pub fn from_entropy() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng(nanos ^ (u64::from(std::process::id()) << 32) ^ count.rotate_left(17));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; returns 0 for `n` == 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// A random (version 4, RFC 4122 variant) UUID in the usual lowercase 8-4-4-4-12 form.
pub fn uuid_v4(rng: &mut Rng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// FNV-1a: a stable hash of a string, used to derive deterministic pod names.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A pod name the way a Deployment names its pods: `<deployment>-<10 hex>-<5 alphanumerics>` (the
/// ReplicaSet's pod-template hash, then the pod's own suffix). Deterministic in `seed`. The conformance suite
/// matches pods by prefix and strips the last two `-` parts to find the backend (weight checks). All replicas of
/// one Deployment share the template hash and differ in the suffix.
pub fn pod_name(deployment: &str, seed: u64, replica: usize) -> String {
    const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = seed ^ stable_hash(deployment);
    let template_hash = format!("{:010x}", Rng::new(base).next_u64() & 0xff_ffff_ffff);
    let mut rng = Rng::new(base ^ (replica as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let suffix: String = (0..5)
        .map(|_| ALNUM[rng.below(ALNUM.len() as u64) as usize] as char)
        .collect();
    format!("{deployment}-{template_hash}-{suffix}")
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the first letter and every letter after a `-` upper case, the
/// others lower case. Names with bytes Go does not canonicalize (spaces, non-token bytes) are returned as they
/// are, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let valid = name.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    });
    if !valid || name.is_empty() {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// At most `max` characters of `s` (on a character boundary), with `…` when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}
