//! A strict, incremental check of an HTTP/1.1 request head (request line and header section), fed the bytes as
//! they arrive, before Pingora's parser sees them.
//!
//! Pingora parses with `httparse`, which is lenient where RFC 9112 lets a recipient be (bare LF line endings,
//! control characters and spaces in the request target, which Pingora percent-encodes and forwards) and removes
//! `Content-Length` when `Transfer-Encoding` is present. Each leniency is a place where a proxy and a backend can
//! read one request two ways. This scanner sees the bytes as the client sent them and refuses, before anything is
//! parsed or forwarded:
//! - line endings other than CRLF (bare LF, bare CR);
//! - a request line that is not `method SP request-target SP HTTP/1.x`: a method that is not a token, a space or
//!   a control character in the target (`400`), a version other than HTTP/1.0 and HTTP/1.1 (`505`);
//! - header lines that are not `token ":" value`: a space before the colon, an empty or non-token name, obs-fold
//!   (a line starting with a space or tab), NUL or other control characters in a value;
//! - `Content-Length` together with `Transfer-Encoding`, and `Content-Length` more than once (RFC 9112 §6.3 calls
//!   both possible smuggling; we refuse instead of repairing);
//! - and the size limits: a request line longer than the limit (`414`), a head larger than the limit or with more
//!   header lines than the limit (`431`).
//!
//! Leading empty lines (CRLF) before the request line are skipped, as RFC 9112 §2.2 asks; they count towards the
//! head size.
//!
//! The scanner also reads how the body that follows is framed ([`HeadScanner::framing`]), so that the connection
//! knows where the next (pipelined) head starts: a `Content-Length` must be a plain number (optional whitespace
//! around at most 18 digits, the values Pingora's parser reads the same way), anything else is refused with 400.

/// The size limits the scanner enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line, without its CRLF.
    pub max_request_line: usize,
    /// Largest head: request line, header lines and their line endings.
    pub max_head: usize,
    /// Most header lines.
    pub max_headers: usize,
}

/// Why a head is refused, with the status the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with what was wrong.
    BadRequest(&'static str),
    /// 414: the request line is longer than [`HeadLimits::max_request_line`].
    UriTooLong,
    /// 431, with which limit was passed.
    HeadersTooLarge(&'static str),
    /// 505: a version other than HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::UriTooLong => 414,
            Refusal::HeadersTooLarge(_) => 431,
            Refusal::VersionNotSupported => 505,
        }
    }

    /// What was wrong, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(r) | Refusal::HeadersTooLarge(r) => r,
            Refusal::UriTooLong => "request line too long",
            Refusal::VersionNotSupported => "HTTP version not supported",
        }
    }
}

/// How the body after an accepted head is framed, which says where the next request head starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next bytes are the next head.
    Empty,
    /// A body of this many bytes (`Content-Length`, more than 0).
    Length(u64),
    /// The end of the body cannot be told from the head: `Transfer-Encoding` (chunked), an `Upgrade` request or
    /// `CONNECT`. The bytes after the head are not scanned until the request is answered.
    Opaque,
}

/// What the bytes fed so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet and nothing is wrong so far.
    More,
    /// The head ended after this many bytes of the last chunk fed; the rest (if any) is body or a later request.
    Complete(usize),
    /// The head is refused.
    Refused(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the request line (leading CRLFs allowed).
    Start,
    /// Leading empty line: CR seen, LF expected.
    StartLf,
    Method,
    Target,
    /// Within "HTTP/1.x"; the number is how many version bytes were seen.
    Version(u8),
    /// CR at the end of the request line or of a header line seen, LF expected; `true` when it ended the
    /// request line.
    LineLf,
    /// At the start of a header line (or of the empty line that ends the head).
    LineStart,
    Name,
    Value,
    /// CR of the final empty line seen, LF expected.
    EndLf,
    Done,
}

/// Which header's value is being read, for the ones the framing depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
}

/// Reading a `Content-Length` value: `OWS 1*18DIGIT OWS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Number {
    Before,
    Digits(u8),
    After,
    Bad,
}

/// The most digits of a `Content-Length` (Pingora parses the value as an `i64`).
const MAX_LENGTH_DIGITS: u8 = 18;

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
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
}

/// A field-value byte (RFC 9110 §5.5): HTAB, SP, VCHAR, obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// A request-target byte: VCHAR or obs-text (non-ASCII bytes are passed on to the UTF-8 check later).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

const VERSION: &[u8; 7] = b"HTTP/1.";
const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const UPGRADE: &[u8] = b"upgrade";
const CONNECT: &[u8; 7] = b"CONNECT";

/// The incremental scanner of one request head. Feed it every byte of the head in order ([`HeadScanner::feed`]);
/// once it returns [`Scan::Complete`] or [`Scan::Refused`] it must not be fed again.
#[derive(Clone, Debug)]
pub struct HeadScanner {
    limits: HeadLimits,
    state: State,
    /// Bytes of the head so far.
    total: usize,
    /// Bytes of the request line so far.
    line_len: usize,
    /// Bytes of the request target so far.
    target_len: usize,
    headers: usize,
    /// The current header name, lowercased, when it is no longer than `transfer-encoding`.
    name: [u8; 17],
    name_len: usize,
    content_lengths: u32,
    transfer_encoding: bool,
    upgrade: bool,
    /// The version's minor digit.
    minor: u8,
    /// The first bytes of the method and its length (to tell `CONNECT`).
    method: [u8; 7],
    method_len: usize,
    /// The header whose value is being read.
    field: Field,
    /// The `Content-Length` value being read, and the value once its line ended.
    number: Number,
    digits: u64,
    length: Option<u64>,
}

impl HeadScanner {
    /// A scanner for the next request head.
    pub fn new(limits: HeadLimits) -> Self {
        HeadScanner {
            limits,
            state: State::Start,
            total: 0,
            line_len: 0,
            target_len: 0,
            headers: 0,
            name: [0; 17],
            name_len: 0,
            content_lengths: 0,
            transfer_encoding: false,
            upgrade: false,
            minor: 0,
            method: [0; 7],
            method_len: 0,
            field: Field::Other,
            number: Number::Before,
            digits: 0,
            length: None,
        }
    }

    /// How the body after the head is framed; meaningful once the head is complete.
    pub fn framing(&self) -> Framing {
        if self.transfer_encoding || self.upgrade || self.is_connect() {
            Framing::Opaque
        } else {
            match self.length {
                Some(n) if n > 0 => Framing::Length(n),
                _ => Framing::Empty,
            }
        }
    }

    fn is_connect(&self) -> bool {
        self.method_len == CONNECT.len() && &self.method == CONNECT
    }

    /// Has any byte of the head (other than leading empty lines) arrived?
    pub fn started(&self) -> bool {
        !matches!(self.state, State::Start | State::StartLf)
    }

    /// Checks the next bytes of the head.
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        let mut i = 0;
        while i < bytes.len() {
            let run = self.plain_run(&bytes[i..]);
            if run > 0 {
                i += run;
                continue;
            }
            self.total += 1;
            if self.total > self.limits.max_head {
                return Scan::Refused(Refusal::HeadersTooLarge("request head too large"));
            }
            if let Err(r) = self.step(bytes[i]) {
                return Scan::Refused(r);
            }
            i += 1;
            if self.state == State::Done {
                return Scan::Complete(i);
            }
        }
        Scan::More
    }

    /// Takes at once the run of plain bytes at the start of `rest` inside a request target or a header value
    /// (most of a head), up to the size limits; returns how many. The byte that ends a run, and a byte at a
    /// limit, go through [`HeadScanner::step`] one at a time, so the outcome is that of a byte-by-byte scan.
    fn plain_run(&mut self, rest: &[u8]) -> usize {
        let room = self.limits.max_head.saturating_sub(self.total);
        let n = match self.state {
            State::Value => {
                let n = rest
                    .iter()
                    .take(room)
                    .take_while(|&&b| is_value_byte(b))
                    .count();
                if self.field == Field::ContentLength {
                    self.length_bytes(&rest[..n]);
                }
                n
            }
            State::Target => {
                let room = room.min(self.limits.max_request_line.saturating_sub(self.line_len));
                let n = rest
                    .iter()
                    .take(room)
                    .take_while(|&&b| is_target_byte(b))
                    .count();
                self.line_len += n;
                self.target_len += n;
                n
            }
            _ => 0,
        };
        self.total += n;
        n
    }

    fn request_line_byte(&mut self) -> Result<(), Refusal> {
        self.line_len += 1;
        if self.line_len > self.limits.max_request_line {
            return Err(Refusal::UriTooLong);
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), Refusal> {
        use Refusal::BadRequest;
        match self.state {
            State::Start => match b {
                b'\r' => self.state = State::StartLf,
                b'\n' => return Err(BadRequest("bare LF")),
                b if is_tchar(b) => {
                    self.request_line_byte()?;
                    self.method_byte(b);
                    self.state = State::Method;
                }
                _ => return Err(BadRequest("invalid method")),
            },
            State::StartLf => match b {
                b'\n' => self.state = State::Start,
                _ => return Err(BadRequest("bare CR")),
            },
            State::Method => {
                self.request_line_byte()?;
                match b {
                    b' ' => self.state = State::Target,
                    b if is_tchar(b) => self.method_byte(b),
                    _ => return Err(BadRequest("invalid method")),
                }
            }
            State::Target => {
                self.request_line_byte()?;
                match b {
                    b' ' if self.target_len == 0 => return Err(BadRequest("empty request target")),
                    b' ' => self.state = State::Version(0),
                    b if is_target_byte(b) => self.target_len += 1,
                    b'\r' | b'\n' => return Err(BadRequest("request line without a version")),
                    _ => return Err(BadRequest("control character in the request target")),
                }
            }
            State::Version(n) => match b {
                b'\r' if n == 8 => {
                    if self.minor > 1 {
                        return Err(Refusal::VersionNotSupported);
                    }
                    self.state = State::LineLf;
                }
                b'\n' => return Err(BadRequest("bare LF")),
                _ => {
                    self.request_line_byte()?;
                    let ok = match n {
                        0..=4 => b == VERSION[usize::from(n)],
                        5 => {
                            if b.is_ascii_digit() && b != b'1' {
                                return Err(Refusal::VersionNotSupported);
                            }
                            b == b'1'
                        }
                        6 => b == b'.',
                        7 => {
                            self.minor = b.wrapping_sub(b'0');
                            b.is_ascii_digit()
                        }
                        // A space or anything else after "HTTP/1.x".
                        _ => false,
                    };
                    if !ok {
                        return Err(BadRequest(
                            "invalid HTTP version or a space in the request target",
                        ));
                    }
                    self.state = State::Version(n + 1);
                }
            },
            State::LineLf => match b {
                b'\n' => self.state = State::LineStart,
                _ => return Err(BadRequest("bare CR")),
            },
            State::LineStart => match b {
                b'\r' => self.state = State::EndLf,
                b'\n' => return Err(BadRequest("bare LF")),
                b' ' | b'\t' => return Err(BadRequest("obsolete line folding")),
                b if is_tchar(b) => {
                    self.headers += 1;
                    if self.headers > self.limits.max_headers {
                        return Err(Refusal::HeadersTooLarge("too many header fields"));
                    }
                    self.name_len = 0;
                    self.name_byte(b);
                    self.state = State::Name;
                }
                b':' => return Err(BadRequest("empty header name")),
                _ => return Err(BadRequest("invalid header name")),
            },
            State::Name => match b {
                b':' => {
                    self.end_name()?;
                    self.state = State::Value;
                }
                b if is_tchar(b) => self.name_byte(b),
                b' ' | b'\t' => return Err(BadRequest("whitespace before the colon of a header")),
                b'\r' | b'\n' => return Err(BadRequest("header line without a colon")),
                _ => return Err(BadRequest("invalid header name")),
            },
            State::Value => match b {
                b'\r' => {
                    self.end_value()?;
                    self.state = State::LineLf;
                }
                b'\n' => return Err(BadRequest("bare LF")),
                b if is_value_byte(b) => {
                    if self.field == Field::ContentLength {
                        self.length_bytes(&[b]);
                    }
                }
                _ => return Err(BadRequest("control character in a header value")),
            },
            State::EndLf => match b {
                b'\n' => {
                    if self.transfer_encoding && self.content_lengths > 0 {
                        return Err(BadRequest("both Content-Length and Transfer-Encoding"));
                    }
                    self.state = State::Done;
                }
                _ => return Err(BadRequest("bare CR")),
            },
            State::Done => {}
        }
        Ok(())
    }

    fn method_byte(&mut self, b: u8) {
        if self.method_len < self.method.len() {
            self.method[self.method_len] = b;
        }
        self.method_len += 1;
    }

    /// Reads bytes of a `Content-Length` value.
    fn length_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.number = match (self.number, b) {
                (Number::Before, b' ' | b'\t') => Number::Before,
                (Number::Before, b'0'..=b'9') => {
                    self.digits = u64::from(b - b'0');
                    Number::Digits(1)
                }
                (Number::Digits(n), b'0'..=b'9') if n < MAX_LENGTH_DIGITS => {
                    self.digits = self.digits * 10 + u64::from(b - b'0');
                    Number::Digits(n + 1)
                }
                (Number::Digits(_) | Number::After, b' ' | b'\t') => Number::After,
                _ => Number::Bad,
            };
        }
    }

    /// A header line's value ended: keeps the `Content-Length`.
    fn end_value(&mut self) -> Result<(), Refusal> {
        if self.field == Field::ContentLength {
            match self.number {
                Number::Digits(_) | Number::After => self.length = Some(self.digits),
                Number::Before | Number::Bad => {
                    return Err(Refusal::BadRequest("invalid Content-Length"))
                }
            }
        }
        Ok(())
    }

    fn name_byte(&mut self, b: u8) {
        if self.name_len < self.name.len() {
            self.name[self.name_len] = b.to_ascii_lowercase();
        }
        self.name_len += 1;
    }

    /// Notes `Content-Length`, `Transfer-Encoding` and `Upgrade` lines when a header name ends.
    fn end_name(&mut self) -> Result<(), Refusal> {
        let name = &self.name[..self.name_len.min(self.name.len())];
        self.field = Field::Other;
        if self.name_len == CONTENT_LENGTH.len() && name == CONTENT_LENGTH {
            self.content_lengths += 1;
            if self.content_lengths > 1 {
                return Err(Refusal::BadRequest("Content-Length more than once"));
            }
            self.field = Field::ContentLength;
            self.number = Number::Before;
        } else if self.name_len == TRANSFER_ENCODING.len() && name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if self.name_len == UPGRADE.len() && name == UPGRADE {
            self.upgrade = true;
        }
        Ok(())
    }
}

/// Feeds `bytes` to a fresh scanner in chunks of `chunk` bytes (for tests: the outcome must not depend on how
/// the bytes were split).
#[cfg(test)]
fn scan_all(limits: HeadLimits, bytes: &[u8], chunk: usize) -> Scan {
    let mut s = HeadScanner::new(limits);
    let mut offset = 0;
    for part in bytes.chunks(chunk.max(1)) {
        match s.feed(part) {
            Scan::More => offset += part.len(),
            Scan::Complete(n) => return Scan::Complete(offset + n),
            r => return r,
        }
    }
    Scan::More
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_request_line: 64,
        max_head: 256,
        max_headers: 4,
    };

    fn bad(reason_part: &str) -> Result<(), String> {
        Err(reason_part.to_string())
    }

    #[test]
    fn table() {
        // (head, expected): Ok(()) = complete at the end of the input; Err(text) = refused with a reason
        // containing text, or a status "414"/"431"/"505"; "more" = incomplete.
        let cases: &[(&[u8], Result<(), String>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(())),
            (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            (
                b"GET /a?b=c&d=%20 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
                Ok(()),
            ),
            (
                b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
                Ok(()),
            ),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            (b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", Ok(())),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(()),
            ),
            // Line endings.
            (b"GET / HTTP/1.1\nHost: a\n\n", bad("bare LF")),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", bad("bare LF")),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", bad("bare LF")),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", bad("bare CR")),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", bad("bare CR")),
            (b"\nGET / HTTP/1.1\r\n\r\n", bad("bare LF")),
            // Request line.
            (
                b"GET /a b HTTP/1.1\r\n\r\n",
                bad("space in the request target"),
            ),
            (b"GET  / HTTP/1.1\r\n\r\n", bad("empty request target")),
            (
                b"GET /\x01 HTTP/1.1\r\n\r\n",
                bad("control character in the request target"),
            ),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", bad("control character")),
            (b"GET /\x00 HTTP/1.1\r\n\r\n", bad("control character")),
            (b"GET / HTTP/1.1 \r\n\r\n", bad("invalid HTTP version")),
            (b"GET / HTTP/1.12\r\n\r\n", bad("invalid HTTP version")),
            (b"GET / http/1.1\r\n\r\n", bad("invalid HTTP version")),
            (b"GET /\r\n\r\n", bad("without a version")),
            (b"G(T / HTTP/1.1\r\n\r\n", bad("invalid method")),
            (b" GET / HTTP/1.1\r\n\r\n", bad("invalid method")),
            (b"GET / HTTP/2.0\r\n\r\n", Err("505".into())),
            (b"GET / HTTP/1.2\r\n\r\n", Err("505".into())),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Err("505".into())),
            // Header lines.
            (
                b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                bad("whitespace before the colon"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
                bad("whitespace before the colon"),
            ),
            (b"GET / HTTP/1.1\r\n: a\r\n\r\n", bad("empty header name")),
            (
                b"GET / HTTP/1.1\r\nX(y): a\r\n\r\n",
                bad("invalid header name"),
            ),
            (b"GET / HTTP/1.1\r\nX-A\r\n\r\n", bad("without a colon")),
            (
                b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
                bad("obsolete line folding"),
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n",
                bad("obsolete line folding"),
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
                bad("control character in a header value"),
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\x1bb\r\n\r\n",
                bad("control character in a header value"),
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
                bad("control character in a header value"),
            ),
            // Framing.
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("both Content-Length and Transfer-Encoding"),
            ),
            (
                b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 5\r\n\r\n",
                bad("both Content-Length and Transfer-Encoding"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                bad("Content-Length more than once"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Lengthy: 1\r\nContent-Length: 1\r\n\r\n",
                Ok(()),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encodings: x\r\nContent-Length: 1\r\n\r\n",
                Ok(()),
            ),
            // Limits: the request line (64), the head (256), header lines (4).
            (
                &[b"GET /".as_slice(), &[b'a'; 50], b" HTTP/1.1\r\n\r\n"].concat(),
                Ok(()),
            ),
            (
                &[b"GET /".as_slice(), &[b'a'; 51], b" HTTP/1.1\r\n\r\n"].concat(),
                Err("414".into()),
            ),
            (
                &[b"GET /".as_slice(), &[b'a'; 500]].concat(),
                Err("414".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
                Ok(()),
            ),
            // A head of exactly 256 bytes, then one byte more (inside a header value).
            (
                &[
                    b"GET / HTTP/1.1\r\nA: ".as_slice(),
                    &[b'v'; 233],
                    b"\r\n\r\n",
                ]
                .concat(),
                Ok(()),
            ),
            (
                &[
                    b"GET / HTTP/1.1\r\nA: ".as_slice(),
                    &[b'v'; 234],
                    b"\r\n\r\n",
                ]
                .concat(),
                Err("431".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
                Err("431".into()),
            ),
            (
                &[
                    b"GET / HTTP/1.1\r\nA: ".as_slice(),
                    &[b'v'; 300],
                    b"\r\n\r\n",
                ]
                .concat(),
                Err("431".into()),
            ),
            (
                &[b"\r\n".repeat(200).as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat(),
                Err("431".into()),
            ),
            // Incomplete.
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Err("more".into())),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Err("more".into())),
            (b"", Err("more".into())),
        ];
        for (head, want) in cases {
            for chunk in [1, 2, 7, head.len().max(1)] {
                let got = scan_all(LIMITS, head, chunk);
                let shown = String::from_utf8_lossy(head);
                match (want, got) {
                    (Ok(()), Scan::Complete(n)) => assert_eq!(n, head.len(), "{shown:?}"),
                    (Err(w), Scan::More) if w == "more" => {}
                    (Err(w), Scan::Refused(r)) => {
                        let status = r.status().to_string();
                        assert!(
                            (w.as_str() == status)
                                || (r.status() == 400 && r.reason().contains(w.as_str())),
                            "{shown:?} (chunks of {chunk}): want {w:?}, got {r:?}"
                        );
                    }
                    (w, g) => panic!("{shown:?} (chunks of {chunk}): want {w:?}, got {g:?}"),
                }
            }
        }
    }

    #[test]
    fn reports_where_the_head_ends() {
        let mut s = HeadScanner::new(LIMITS);
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n"),
            Scan::More
        );
        assert!(s.started());
        assert_eq!(s.feed(b"\r\nokGET / HTTP/1.1"), Scan::Complete(2));
    }

    /// Scans a whole head and returns its framing, or the refusal's reason.
    fn framing_of(head: &[u8], chunk: usize) -> Result<Framing, String> {
        let mut s = HeadScanner::new(LIMITS);
        for part in head.chunks(chunk.max(1)) {
            match s.feed(part) {
                Scan::More => {}
                Scan::Complete(_) => return Ok(s.framing()),
                Scan::Refused(r) => return Err(r.reason().to_string()),
            }
        }
        Err("incomplete".into())
    }

    #[test]
    fn framing() {
        use Framing::*;
        let cases: &[(&[u8], Result<Framing, &str>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Empty)),
            (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Ok(Empty)),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
                Ok(Length(12)),
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length:7\r\n\r\n",
                Ok(Length(7)),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: \t 0042 \t\r\n\r\n",
                Ok(Length(42)),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n",
                Ok(Length(999_999_999_999_999_999)),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1000000000000000000\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                Err("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:  \r\n\r\n",
                Err("invalid Content-Length"),
            ),
            // Other headers with digits or similar names do not count.
            (
                b"POST / HTTP/1.1\r\nX-Content-Length: x\r\nContent-Lengths: y\r\n\r\n",
                Ok(Empty),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Opaque),
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                Ok(Opaque),
            ),
            (
                b"GET / HTTP/1.1\r\nUPGRADE: h2c\r\nContent-Length: 3\r\n\r\n",
                Ok(Opaque),
            ),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Ok(Opaque)),
            // Methods are case-sensitive: only `CONNECT` is CONNECT.
            (b"connect a:443 HTTP/1.1\r\n\r\n", Ok(Empty)),
            (b"CONNECTX / HTTP/1.1\r\n\r\n", Ok(Empty)),
            (b"CONNEC / HTTP/1.1\r\n\r\n", Ok(Empty)),
        ];
        for (head, want) in cases {
            for chunk in [1, 3, head.len()] {
                let got = framing_of(head, chunk);
                let shown = String::from_utf8_lossy(head);
                match (want, &got) {
                    (Ok(w), Ok(g)) => assert_eq!(w, g, "{shown:?} (chunks of {chunk})"),
                    (Err(w), Err(g)) => assert!(g.contains(w), "{shown:?}: want {w:?}, got {g:?}"),
                    _ => panic!("{shown:?} (chunks of {chunk}): want {want:?}, got {got:?}"),
                }
            }
        }
    }

    #[test]
    fn leading_empty_lines_do_not_start_a_head() {
        let mut s = HeadScanner::new(LIMITS);
        assert_eq!(s.feed(b"\r\n\r\n"), Scan::More);
        assert!(!s.started());
    }
}
