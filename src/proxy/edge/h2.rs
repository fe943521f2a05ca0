//! HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and cancels them at once. The `h2` crate bounds
//! the streams it queues before the server accepts them, but Pingora accepts every stream at once and starts
//! its request (routing, an upstream connection, the upstream request) on its own task; a cancelled stream frees
//! its slot among the client's concurrent streams immediately while that work goes on. So the client can keep
//! the proxy busy with far more requests than `SETTINGS_MAX_CONCURRENT_STREAMS` allows.
//!
//! [`ResetWatch`] reads the frame headers the client sends (not the payloads) and applies Envoy's rule for
//! premature resets: a stream reset by the client within one second of being opened is premature; once the
//! connection has opened `limit` streams, the connection is closed when more than half of them were reset
//! prematurely.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A reset this soon after the stream opened is premature.
const PREMATURE: Duration = Duration::from_secs(1);
/// The most recently opened streams remembered (older ones cannot be reset prematurely any more anyway, unless
/// the client opens more than this many in a second).
const RECENT: usize = 4096;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;

/// The premature-reset count of one HTTP/2 connection, fed the bytes the client sends after its preface.
#[derive(Debug)]
pub struct ResetWatch {
    limit: u64,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    opened: u64,
    premature: u64,
    /// Streams opened in the last second: (stream id, when), ids ascending.
    recent: VecDeque<(u32, Instant)>,
    max_id: u32,
}

impl ResetWatch {
    /// A watch that judges the connection once it has opened `limit` streams (0: never).
    pub fn new(limit: u64) -> Self {
        ResetWatch {
            limit,
            header: [0; 9],
            have: 0,
            skip: 0,
            opened: 0,
            premature: 0,
            recent: VecDeque::new(),
            max_id: 0,
        }
    }

    /// Reads the next bytes from the client; true when the connection should be closed.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if self.frame(h[3], stream, now) {
                    return true;
                }
            }
        }
        false
    }

    fn frame(&mut self, kind: u8, stream: u32, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&(_, at)| now.duration_since(at) > PREMATURE)
        {
            self.recent.pop_front();
        }
        match kind {
            // A HEADERS frame with a new (higher) client stream id opens a stream; others are trailers.
            HEADERS if stream > self.max_id && stream % 2 == 1 => {
                self.max_id = stream;
                self.opened += 1;
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back((stream, now));
            }
            RST_STREAM => {
                if let Ok(i) = self.recent.binary_search_by_key(&stream, |&(id, _)| id) {
                    self.recent.remove(i);
                    self.premature += 1;
                }
            }
            _ => {}
        }
        self.limit > 0 && self.opened >= self.limit && self.premature * 2 > self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            0,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xAB, payload));
        f
    }

    #[test]
    fn cancelled_streams_close_the_connection_after_the_limit() {
        let now = Instant::now();
        let mut w = ResetWatch::new(10);
        for i in 0..9u32 {
            let id = 2 * i + 1;
            assert!(!w.feed(&frame(HEADERS, id, 20), now));
            assert!(!w.feed(&frame(RST_STREAM, id, 4), now));
        }
        // The tenth stream reaches the limit with nine of ten reset prematurely.
        assert!(w.feed(&frame(HEADERS, 19, 20), now));
    }

    #[test]
    fn frames_split_anywhere_are_read_the_same() {
        let now = Instant::now();
        let mut bytes = Vec::new();
        for i in 0..20u32 {
            bytes.extend(frame(HEADERS, 2 * i + 1, 37));
            bytes.extend(frame(0x0, 2 * i + 1, 1000));
            bytes.extend(frame(RST_STREAM, 2 * i + 1, 4));
        }
        for chunk in [1, 5, 9, 10, 333, bytes.len()] {
            let mut w = ResetWatch::new(20);
            let closed = bytes.chunks(chunk).any(|c| w.feed(c, now));
            assert!(closed, "chunks of {chunk}");
            assert_eq!((w.opened, w.premature), (20, 19), "chunks of {chunk}");
        }
    }

    #[test]
    fn late_resets_and_completed_streams_are_fine() {
        let start = Instant::now();
        let mut w = ResetWatch::new(10);
        for i in 0..100u32 {
            let id = 2 * i + 1;
            let at = start + Duration::from_millis(u64::from(i) * 10);
            assert!(!w.feed(&frame(HEADERS, id, 10), at));
            // Every other stream is cancelled, but only after two seconds.
            if i % 2 == 0 {
                assert!(!w.feed(&frame(RST_STREAM, id, 4), at + Duration::from_secs(2)));
            }
        }
        assert_eq!(w.premature, 0);
        // Trailers (HEADERS on an open stream) do not open streams.
        assert!(!w.feed(&frame(HEADERS, 1, 10), start));
        assert_eq!(w.opened, 100);
        // No limit: never closed.
        let mut off = ResetWatch::new(0);
        for i in 0..1000u32 {
            assert!(!off.feed(&frame(HEADERS, 2 * i + 1, 0), start));
            assert!(!off.feed(&frame(RST_STREAM, 2 * i + 1, 4), start));
        }
    }
}
