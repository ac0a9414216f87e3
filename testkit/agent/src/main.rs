//! A stand-in for OpenSandbox's in-sandbox agent, `execd`, for Berth's tests: what Berth injects
//! into a sandbox when `runtime.execd_image` is set, and what the server proxy's tests talk to.
//! `cargo xtask test-image` builds it static into `berth-test/execd:latest` (`/execd`, beside
//! `/bootstrap.sh` and busybox's `sh` and `cp`). Only the standard library: one thread per
//! connection, HTTP/1.1 with keep-alive.
//!
//! `--listen <address:port>` (default `0.0.0.0:44772`, execd's port). Routes:
//!
//! - `GET /ping` → 200, empty body: the official SDK's health check (`opensandbox` 1.1.1,
//!   `api/execd/api/health/ping.py`: `GET /ping`, healthy on 200).
//! - `GET /sse?n=N&interval_ms=M` → 200 `text/event-stream`, chunked: `N` events (default 5,
//!   at most 100 000) `id: <i>\ndata: event <i>\n\n` for i = 1..=N, each one chunk written and
//!   flushed on its own, `M` ms apart (default 100, at most 60 000), then the end of the body.
//! - `POST` or `PUT /upload` → reads the whole body (`Content-Length` or chunked), counting its
//!   bytes without keeping them, then 200 `{"bytes":<count>}`.
//! - `GET /ws` → a WebSocket (RFC 6455) upgrade: every data frame is echoed as it came (text or
//!   binary, fragments too), a ping is answered with a pong, a close with a close.
//! - any method on `/echo` or below → 200 JSON `{"method","target","headers","bodyBytes"}`: the
//!   request line's target as received (query included) and every header in order, as
//!   `[name, value]` pairs; for checks of what a proxy adds, removes and keeps.
//! - `GET /sleep?ms=N` → 200 after `N` ms (at most 600 000): a slow upstream.
//! - anything else → 404.
//!
//! A request with `Expect: 100-continue` gets its `100 Continue` before its body is read.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// execd's port, which the SDK asks the endpoint of.
const DEFAULT_LISTEN: &str = "0.0.0.0:44772";
/// Longest request head (request line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// Largest WebSocket frame echoed.
const MAX_FRAME: u64 = 64 * 1024 * 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(address)) => listen = address,
            _ => {
                eprintln!("usage: execd [--listen <address:port>]");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("execd (berth-test-agent): cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("execd (berth-test-agent): listening on {listen}");
    serve(&listener);
}

/// Accepts connections until the listener fails, one thread each.
fn serve(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            // Small answers go out at once rather than waiting for an acknowledgement.
            let _ = stream.set_nodelay(true);
            let _ = connection(stream);
        });
    }
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The value of query parameter `name` as a number, if present and numeric.
    fn query_number(&self, name: &str) -> Option<u64> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
    }

    fn keep_alive(&self) -> bool {
        if self.version == "HTTP/1.0" {
            self.header_has_token("connection", "keep-alive")
        } else {
            !self.header_has_token("connection", "close")
        }
    }

    fn framing(&self) -> Result<Framing, &'static str> {
        if self.header_has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            None => Ok(Framing::Length(0)),
            Some(n) => n
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| "bad Content-Length"),
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Serves requests on one connection until the client or a route closes it.
fn connection(stream: TcpStream) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let head = match read_head(&mut input) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                respond(
                    &mut out,
                    "400 Bad Request",
                    "text/plain",
                    b"bad request\n",
                    false,
                )?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Ok(framing) = head.framing() else {
            respond(
                &mut out,
                "400 Bad Request",
                "text/plain",
                b"bad body\n",
                false,
            )?;
            return Ok(());
        };
        if head.header_has_token("expect", "100-continue") {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let keep = head.keep_alive();
        let path = head.path().to_owned();
        match (head.method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/ping") => {
                read_body(&mut input, framing)?;
                respond(&mut out, "200 OK", "text/plain", b"", keep)?;
            }
            ("GET", "/sse") => {
                read_body(&mut input, framing)?;
                let n = head.query_number("n").unwrap_or(5).min(100_000);
                let interval = head.query_number("interval_ms").unwrap_or(100).min(60_000);
                sse(&mut out, n, Duration::from_millis(interval), keep)?;
            }
            ("POST" | "PUT", "/upload") => {
                let bytes = read_body(&mut input, framing)?;
                let body = format!("{{\"bytes\":{bytes}}}");
                respond(
                    &mut out,
                    "200 OK",
                    "application/json",
                    body.as_bytes(),
                    keep,
                )?;
            }
            ("GET", "/ws") => {
                read_body(&mut input, framing)?;
                return websocket(&head, &mut input, &mut out);
            }
            (_, p) if p == "/echo" || p.starts_with("/echo/") => {
                let body_bytes = read_body(&mut input, framing)?;
                let body = echo_json(&head, body_bytes);
                respond(
                    &mut out,
                    "200 OK",
                    "application/json",
                    body.as_bytes(),
                    keep,
                )?;
            }
            ("GET", "/sleep") => {
                read_body(&mut input, framing)?;
                let ms = head.query_number("ms").unwrap_or(1000).min(600_000);
                std::thread::sleep(Duration::from_millis(ms));
                respond(&mut out, "200 OK", "text/plain", b"slept\n", keep)?;
            }
            _ => {
                read_body(&mut input, framing)?;
                respond(
                    &mut out,
                    "404 Not Found",
                    "text/plain",
                    b"no such route\n",
                    keep,
                )?;
            }
        }
        if !keep {
            return Ok(());
        }
    }
}

/// Reads one request head; `None` when the connection ends before one starts.
fn read_head(input: &mut impl BufRead) -> io::Result<Option<Head>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut read = 0;
    let mut line = Vec::new();
    // Empty lines before a request line are allowed (RFC 9112, 2.2).
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        read += line.len();
        if read > MAX_HEAD {
            return Err(bad("head too long"));
        }
        if !trim_eol(&line).is_empty() {
            break;
        }
    }
    let request_line = String::from_utf8_lossy(trim_eol(&line)).into_owned();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Err(bad("bad request line"));
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(bad("connection ended in the head"));
        }
        read += line.len();
        if read > MAX_HEAD {
            return Err(bad("head too long"));
        }
        let text = trim_eol(&line);
        if text.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(text);
        let (name, value) = text.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    }))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads a request body to its end, keeping nothing; the number of bytes.
fn read_body(input: &mut impl BufRead, framing: Framing) -> io::Result<u64> {
    match framing {
        Framing::Length(n) => {
            let copied = io::copy(&mut input.take(n), &mut io::sink())?;
            if copied < n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(copied)
        }
        Framing::Chunked => {
            let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
            let mut total = 0;
            let mut line = Vec::new();
            loop {
                line.clear();
                input.read_until(b'\n', &mut line)?;
                let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
                let size = text.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    loop {
                        line.clear();
                        if input.read_until(b'\n', &mut line)? == 0 || trim_eol(&line).is_empty() {
                            return Ok(total);
                        }
                    }
                }
                let copied = io::copy(&mut input.take(size), &mut io::sink())?;
                if copied < size {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                total += copied;
                line.clear();
                input.read_until(b'\n', &mut line)?;
                if !trim_eol(&line).is_empty() {
                    return Err(bad("chunk not followed by CRLF"));
                }
            }
        }
    }
}

/// A whole answer, written at once.
fn respond(
    out: &mut impl Write,
    status: &str,
    content_type: &str,
    body: &[u8],
    keep: bool,
) -> io::Result<()> {
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !keep {
        answer.extend_from_slice(b"Connection: close\r\n");
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(body);
    out.write_all(&answer)?;
    out.flush()
}

/// `n` server-sent events, one chunk each, `interval` apart.
fn sse(out: &mut impl Write, n: u64, interval: Duration, keep: bool) -> io::Result<()> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
    );
    if !keep {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()?;
    for i in 1..=n {
        if i > 1 {
            std::thread::sleep(interval);
        }
        out.write_all(&chunk(sse_event(i).as_bytes()))?;
        out.flush()?;
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

fn sse_event(i: u64) -> String {
    format!("id: {i}\ndata: event {i}\n\n")
}

/// `data` as one chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// The request as JSON (see the module documentation).
fn echo_json(head: &Head, body_bytes: u64) -> String {
    let headers: Vec<String> = head
        .headers
        .iter()
        .map(|(n, v)| format!("[{},{}]", json_string(n), json_string(v)))
        .collect();
    format!(
        "{{\"method\":{},\"target\":{},\"headers\":[{}],\"bodyBytes\":{body_bytes}}}",
        json_string(&head.method),
        json_string(&head.target),
        headers.join(",")
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The WebSocket handshake's answer key (RFC 6455, 4.2.2).
fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

/// Upgrades the connection and echoes frames until a close (or the client goes).
fn websocket(head: &Head, input: &mut impl Read, out: &mut impl Write) -> io::Result<()> {
    let key = head.header("sec-websocket-key");
    let (true, Some(key)) = (head.header_has_token("upgrade", "websocket"), key) else {
        return respond(
            out,
            "400 Bad Request",
            "text/plain",
            b"not a WebSocket handshake\n",
            false,
        );
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    out.write_all(answer.as_bytes())?;
    out.flush()?;
    loop {
        let frame = match read_frame(input) {
            Ok(frame) => frame,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // 1009: too big; 1002: protocol error.
                let code: u16 = if e.to_string().contains("too big") {
                    1009
                } else {
                    1002
                };
                out.write_all(&frame_bytes(true, 0x8, &code.to_be_bytes()))?;
                return out.flush();
            }
            Err(e) => return Err(e),
        };
        match frame.opcode {
            0x0..=0x2 => out.write_all(&frame_bytes(frame.fin, frame.opcode, &frame.payload))?,
            0x8 => {
                out.write_all(&frame_bytes(true, 0x8, &frame.payload))?;
                return out.flush();
            }
            0x9 => out.write_all(&frame_bytes(true, 0xA, &frame.payload))?,
            0xA => {}
            _ => {
                out.write_all(&frame_bytes(true, 0x8, &1002_u16.to_be_bytes()))?;
                return out.flush();
            }
        }
        out.flush()?;
    }
}

/// One WebSocket frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

fn read_frame(input: &mut impl Read) -> io::Result<Frame> {
    let mut first = [0_u8; 2];
    input.read_exact(&mut first)?;
    let fin = first[0] & 0x80 != 0;
    let opcode = first[0] & 0x0F;
    let masked = first[1] & 0x80 != 0;
    let len = match first[1] & 0x7F {
        126 => {
            let mut b = [0_u8; 2];
            input.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0_u8; 8];
            input.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
    }
    let mut mask = [0_u8; 4];
    if masked {
        input.read_exact(&mut mask)?;
    }
    let mut payload = vec![0_u8; usize::try_from(len).unwrap_or(usize::MAX)];
    input.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

/// A server frame (never masked).
fn frame_bytes(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0F)];
    let len = payload.len();
    if len < 126 {
        frame.push(u8::try_from(len).unwrap_or(0));
    } else if let Ok(short) = u16::try_from(len) {
        frame.push(126);
        frame.extend_from_slice(&short.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake only.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0_u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0_u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding (RFC 4648, 4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn sha1_and_base64_match_their_standards() {
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input), expected);
        }
        // RFC 6455, 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn heads_are_parsed_and_framed() {
        let mut input = Cursor::new(
            b"\r\nPOST /upload?x=1&n=7 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nX-Two: b:c\r\n\r\n"
                .to_vec(),
        );
        let head = read_head(&mut input).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path(), head.query_number("n")),
            ("POST", "/upload", Some(7))
        );
        assert_eq!(head.header("x-two"), Some("b:c"));
        assert_eq!(head.framing(), Ok(Framing::Chunked));
        assert!(head.keep_alive());
        let mut closing = Cursor::new(b"GET / HTTP/1.0\r\nContent-Length: 12\r\n\r\n".to_vec());
        let head = read_head(&mut closing).unwrap().unwrap();
        assert_eq!(head.framing(), Ok(Framing::Length(12)));
        assert!(!head.keep_alive());
        assert!(read_head(&mut Cursor::new(Vec::new())).unwrap().is_none());
        let error = read_head(&mut Cursor::new(b"GARBAGE\r\n\r\n".to_vec())).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunked_bodies_are_counted_to_their_end() {
        let mut input = Cursor::new(
            b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT".to_vec(),
        );
        assert_eq!(read_body(&mut input, Framing::Chunked).unwrap(), 21);
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
        let mut short = Cursor::new(b"abc".to_vec());
        assert!(read_body(&mut short, Framing::Length(4)).is_err());
    }

    #[test]
    fn frames_round_trip_at_every_length_encoding() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            // A client frame: masked.
            let mut client = frame_bytes(false, 0x2, &payload);
            let mask = [1_u8, 2, 3, 4];
            let header_len = client.len() - payload.len();
            client[1] |= 0x80;
            let mut masked: Vec<u8> = client[..header_len].to_vec();
            masked.extend_from_slice(&mask);
            masked.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            let frame = read_frame(&mut Cursor::new(masked)).unwrap();
            assert_eq!(
                frame,
                Frame {
                    fin: false,
                    opcode: 0x2,
                    payload
                }
            );
        }
    }

    #[test]
    fn echo_is_json_with_every_header_in_order() {
        let head = Head {
            method: "PATCH".into(),
            target: "/echo/a?q=\"1\"".into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                ("X-A".into(), "1".into()),
                ("x-a".into(), "tab\there".into()),
            ],
        };
        assert_eq!(
            echo_json(&head, 3),
            r#"{"method":"PATCH","target":"/echo/a?q=\"1\"","headers":[["X-A","1"],["x-a","tab\u0009here"]],"bodyBytes":3}"#
        );
    }

    /// The routes over a real loopback connection, as a proxy or the SDK would use them.
    #[test]
    fn routes_answer_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(&listener));
        let connect = || {
            let stream = TcpStream::connect(address).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            (stream.try_clone().unwrap(), BufReader::new(stream))
        };
        let status_line = |input: &mut BufReader<TcpStream>| {
            let mut line = String::new();
            input.read_line(&mut line).unwrap();
            let mut length = 0;
            let mut chunked = false;
            loop {
                let mut header = String::new();
                input.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                let lower = header.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                chunked |= lower.starts_with("transfer-encoding: chunked");
            }
            (line.trim().to_owned(), length, chunked)
        };

        // Keep-alive: ping, a chunked upload with 100-continue, and ping again on one connection.
        let (mut out, mut input) = connect();
        out.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            status_line(&mut input),
            ("HTTP/1.1 200 OK".into(), 0, false)
        );
        out.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut line = String::new();
        input.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "HTTP/1.1 100 Continue");
        input.read_line(&mut line).unwrap();
        let block = vec![b'x'; 100_000];
        for _ in 0..30 {
            out.write_all(&chunk(&block)).unwrap();
        }
        out.write_all(b"0\r\n\r\n").unwrap();
        let (status, length, _) = status_line(&mut input);
        assert_eq!(status, "HTTP/1.1 200 OK");
        let mut body = vec![0; length];
        input.read_exact(&mut body).unwrap();
        assert_eq!(body, b"{\"bytes\":3000000}");
        out.write_all(b"GET /nothing HTTP/1.1\r\n\r\n").unwrap();
        let (status, length, _) = status_line(&mut input);
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        input.read_exact(&mut vec![0; length]).unwrap();

        // SSE: each event is a chunk of its own.
        out.write_all(b"GET /sse?n=3&interval_ms=1 HTTP/1.1\r\n\r\n")
            .unwrap();
        assert!(status_line(&mut input).2, "not chunked");
        for i in 1..=3 {
            let mut size = String::new();
            input.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut data = vec![0; size + 2];
            input.read_exact(&mut data).unwrap();
            assert_eq!(&data[..size], sse_event(i).as_bytes());
        }
        let mut end = String::new();
        input.read_line(&mut end).unwrap();
        assert_eq!(end.trim(), "0");

        // WebSocket: a masked text frame comes back unmasked, a close is answered.
        let (mut out, mut input) = connect();
        out.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            input.read_line(&mut line).unwrap();
            answer.push_str(&line);
            if line.trim().is_empty() {
                break;
            }
        }
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        assert!(
            answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{answer}"
        );
        let mask = [9_u8, 8, 7, 6];
        let mut frame = vec![0x81, 0x80 | 5];
        frame.extend_from_slice(&mask);
        frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out.write_all(&frame).unwrap();
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Frame {
                fin: true,
                opcode: 0x1,
                payload: b"hello".to_vec()
            }
        );
        let mut close = vec![0x88, 0x80 | 2];
        close.extend_from_slice(&mask);
        close.extend([0x03 ^ mask[0], 0xE8 ^ mask[1]]);
        out.write_all(&close).unwrap();
        let closed = read_frame(&mut input).unwrap();
        assert_eq!((closed.opcode, closed.payload), (0x8, vec![0x03, 0xE8]));
    }
}
