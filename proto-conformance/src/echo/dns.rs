//! A stand-in for the CoreDNS pod of the UDPRoute conformance test (`registry.k8s.io/coredns/coredns` with a
//! Corefile whose `foo.bar.com:53` block has the `whoami` plugin): an authoritative DNS server over UDP.
//!
//! For a query whose name is in one of the configured zones it answers like CoreDNS `whoami`: `NOERROR`, `AA`
//! set, the question echoed, an empty answer section, and in the additional section an `A` (or `AAAA`) record of
//! the client's address under the query name and an `SRV` record `_udp.<name>` with the client's port and target
//! `.` (TTL 0). Names outside the zones get `REFUSED` (the Corefile's `.` block forwards to public resolvers,
//! which this loopback-only stand-in does not do); a query that is not exactly one question gets `FORMERR`;
//! anything shorter than a DNS header, or a response, is dropped. Messages are parsed by hand (RFC 1035).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::UdpSocket;

use super::{log_line, stopped, Tasks};

/// `A`.
pub const TYPE_A: u16 = 1;
/// `AAAA`.
pub const TYPE_AAAA: u16 = 28;
/// `SRV`.
pub const TYPE_SRV: u16 = 33;
/// `NOERROR`.
pub const RCODE_NOERROR: u8 = 0;
/// `FORMERR`.
pub const RCODE_FORMERR: u8 = 1;
/// `REFUSED`.
pub const RCODE_REFUSED: u8 = 5;

/// Configuration of the DNS stand-in.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The UDP socket (port 53 in the manifests); port 0 picks a free port.
    pub addr: SocketAddr,
    /// Zones answered with `whoami` (e.g. `foo.bar.com`); a trailing dot is optional, case is ignored.
    pub zones: Vec<String>,
    /// Print one line per query.
    pub log_to_stdout: bool,
}

/// A running DNS stand-in; dropping it stops it.
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Tasks,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One parsed question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name, lower case, dot-separated, with a trailing dot (`foo.bar.com.`; the root is `.`).
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Where the question section ends in the message.
    pub end: usize,
}

/// Reads a (possibly compressed) name at `pos`; returns it (lower case, trailing dot) and the position after it
/// in the original message. Bounded: at most 128 labels and 16 pointer jumps.
pub fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        match len {
            0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Some((name, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = (usize::from(l & 0x3f) << 8) | usize::from(*msg.get(pos + 1)?);
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 16 || target >= pos {
                    return None;
                }
                pos = target;
            }
            l if l & 0xc0 == 0 => {
                let label = msg.get(pos + 1..pos + 1 + usize::from(l))?;
                name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                name.push('.');
                pos += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
    None
}

/// Parses the single question of a query (`None` if the message is malformed or has not exactly one).
pub fn parse_question(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let (name, pos) = read_name(msg, 12)?;
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Question {
        name,
        qtype,
        qclass,
        end: pos + 4,
    })
}

/// Encodes a name (dot-separated, trailing dot optional) in wire format; `None` if a label is empty or longer
/// than 63 bytes.
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    let trimmed = name.trim_end_matches('.');
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Some(out)
}

/// A DNS query for `name` (type `qtype`, class IN, recursion desired) with this id.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&encode_name(name)?);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    Some(out)
}

fn in_zone(name: &str, zones: &[String]) -> bool {
    let name = name.trim_end_matches('.');
    zones.iter().any(|z| {
        let z = z.trim_end_matches('.').to_ascii_lowercase();
        name == z || name.ends_with(&format!(".{z}"))
    })
}

fn header(query: &[u8], rcode: u8, counts: [u16; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // QR, the query's opcode and RD, AA; RA clear.
    let opcode_rd = query[2] & 0x79;
    out.push(0x80 | opcode_rd | 0x04);
    out.push(rcode & 0x0f);
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out
}

/// The answer to one datagram from `client` (`None`: drop it).
pub fn answer(query: &[u8], client: SocketAddr, zones: &[String]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let Some(q) = parse_question(query) else {
        return Some(header(query, RCODE_FORMERR, [0, 0, 0, 0]));
    };
    let question = &query[12..q.end];
    if !in_zone(&q.name, zones) {
        let mut out = header(query, RCODE_REFUSED, [1, 0, 0, 0]);
        out.extend_from_slice(question);
        return Some(out);
    }
    let mut out = header(query, RCODE_NOERROR, [1, 0, 0, 2]);
    out.extend_from_slice(question);
    // Additional 1: the client's address under the query name (a pointer to the question's name at 12).
    out.extend_from_slice(&[0xc0, 12]);
    match client.ip() {
        IpAddr::V4(v4) => {
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.extend_from_slice(&TYPE_AAAA.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&v6.octets());
        }
    }
    // Additional 2: SRV _udp.<name> 0 0 <client port> .
    out.push(4);
    out.extend_from_slice(b"_udp");
    out.extend_from_slice(&[0xc0, 12]);
    out.extend_from_slice(&TYPE_SRV.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&7u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&client.port().to_be_bytes());
    out.push(0);
    Some(out)
}

impl DnsServer {
    /// Binds the socket and starts answering on the current tokio runtime.
    pub async fn start(cfg: DnsConfig) -> anyhow::Result<DnsServer> {
        let socket = UdpSocket::bind(cfg.addr).await.with_context(|| {
            format!(
                "DNS: binding {} (port 53 needs root or CAP_NET_BIND_SERVICE)",
                cfg.addr
            )
        })?;
        let addr = socket.local_addr()?;
        let mut tasks = Tasks::new();
        let mut shutdown = tasks.shutdown_signal();
        let zones = Arc::new(cfg.zones);
        let log = cfg.log_to_stdout;
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    received = socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = received else { continue };
                        let query = &buf[..n];
                        if let Some(reply) = answer(query, from, &zones) {
                            if let Some(q) = parse_question(query) {
                                log_line(log, format_args!("[INFO] {from} - \"{} {}\" rcode={}", q.qtype, q.name, reply[3] & 0x0f));
                            }
                            let _ = socket.send_to(&reply, from).await;
                        }
                    }
                    () = stopped(&mut shutdown) => break,
                }
            }
        });
        Ok(DnsServer { addr, tasks })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and returns once its socket is closed.
    pub async fn shutdown_and_wait(self) {
        self.tasks.stop_and_wait().await;
    }
}

/// The zones served by `whoami` in a Corefile: the keys (`zone[:port]`, several per block allowed) of every
/// server block whose body names the `whoami` plugin. Comments (`#` to the end of the line) are ignored.
pub fn whoami_zones(corefile: &str) -> Vec<String> {
    let text: String = corefile
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut zones = Vec::new();
    let mut rest = text.as_str();
    // Bounded by the text: every iteration consumes one top-level block.
    while let Some(open) = rest.find('{') {
        let keys = &rest[..open];
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let body = &rest[open + 1..close];
        if body.split_whitespace().any(|w| w == "whoami") {
            for key in keys.split_whitespace() {
                let zone = key
                    .trim_start_matches("dns://")
                    .split(':')
                    .next()
                    .unwrap_or("");
                if !zone.is_empty() {
                    zones.push(zone.to_string());
                }
            }
        }
        rest = &rest[close + 1..];
    }
    zones
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corefile_zones() {
        let corefile = ".:53 {\n    forward . 8.8.8.8 9.9.9.9\n    log\n    errors\n}\nfoo.bar.com:53 {\n  whoami\n}\n";
        assert_eq!(whoami_zones(corefile), ["foo.bar.com"]);
        assert!(whoami_zones("a.org {\n forward . 1.1.1.1 # whoami\n}").is_empty());
    }

    #[test]
    fn whoami_answer() {
        let q = build_query(0x1234, "foo.bar.com.", TYPE_A).unwrap();
        let client: SocketAddr = "127.0.0.9:5353".parse().unwrap();
        let zones = vec!["foo.bar.com".to_string()];
        let a = answer(&q, client, &zones).unwrap();
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "QR");
        assert_eq!(a[2] & 0x04, 0x04, "AA");
        assert_eq!(a[3] & 0x0f, RCODE_NOERROR);
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 2]);
        let q2 = parse_question(&a).unwrap();
        assert_eq!(q2.name, "foo.bar.com.");
        let (name, pos) = read_name(&a, q2.end).unwrap();
        assert_eq!(name, "foo.bar.com.");
        assert_eq!(&a[pos..pos + 2], &TYPE_A.to_be_bytes());
        assert_eq!(&a[pos + 10..pos + 14], &[127, 0, 0, 9]);
        let (srv, _) = read_name(&a, pos + 14).unwrap();
        assert_eq!(srv, "_udp.foo.bar.com.");
        let refused = answer(
            &build_query(1, "example.org", TYPE_A).unwrap(),
            client,
            &zones,
        )
        .unwrap();
        assert_eq!(refused[3] & 0x0f, RCODE_REFUSED);
        assert!(
            answer(&a, client, &zones).is_none(),
            "responses are dropped"
        );
        assert!(answer(&[0; 5], client, &zones).is_none());
    }
}
