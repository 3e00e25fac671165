//! A minimal HTTP/1.1 client over `std::net::TcpStream` for the tests of the node's and the
//! example app's HTTP endpoints: one request per connection, chunked bodies decoded, and
//! streams (Server-Sent Events) read until a needle appears, each wait with a deadline.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends `method path` with an empty body and the given `Connection` header; the response
/// is read from the returned stream, whose reads time out after 200 ms so that
/// [`read_until`] can check its deadline between them.
pub fn open(addr: SocketAddr, method: &str, path: &str, connection: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
    )
    .unwrap();
    stream
}

/// A whole response.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    /// The body, chunked transfer encoding decoded.
    pub body: String,
}

/// `method path` with `Connection: close`, read to the end (at most `deadline`).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    deadline: Duration,
) -> Result<Response, String> {
    let mut stream = open(addr, method, path, "close");
    stream
        .set_read_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the response to {method} {path}: {e}"))?;
    let response = String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let head = head.to_lowercase();
    let body = if head.lines().any(|l| l == "transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Response { status, head, body })
}

/// The body of `GET path` if it answers 200 OK.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let r = call(addr, "GET", path, Duration::from_secs(10))?;
    if r.status != 200 {
        return Err(format!("GET {path}: not 200 OK: {}", r.head));
    }
    Ok(r.body)
}

/// Decodes a chunked transfer-encoded body.
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or("a chunk size line without its end")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("a chunk shorter than its size")?;
        out.push_str(chunk);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("a chunk without its CRLF")?;
    }
}

/// Reads from `stream` into `seen` until it contains `needle`; panics after `deadline`.
pub fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str, deadline: Duration) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(
            start.elapsed() < deadline,
            "timed out waiting for {needle:?}; received:\n{seen}"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("the stream ended before {needle:?}; received:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
}
