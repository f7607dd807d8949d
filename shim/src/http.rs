//! A minimal HTTP/1.1 client for exactly one JSON POST over a unix socket.
//!
//! The shim sends one request per process, so there is no keep-alive, no redirects and no
//! content coding. It reads just enough of the reply (status line, Content-Length, chunked
//! transfer coding, or read-to-close) to hand the body on byte for byte.

use core::fmt;
use core::time::Duration;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::sys::{self, Errno, Fd};

/// Unix sockets have no host name, but HTTP/1.1 requires the header.
const HOST: &str = "plexus";

/// Longest status, header or chunk-size line accepted; a peer that is not an HTTP server
/// cannot make the shim buffer without bound.
const MAX_LINE: usize = 16 * 1024;

pub struct Timeouts {
    /// How long to wait for the daemon to accept the connection.
    pub connect: Duration,
    /// How long any single read or write may block.
    pub io: Duration,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
pub enum Error {
    /// Nobody answered on the socket: the only cases where the daemon surely saw nothing.
    Connect(Errno),
    NotAccepted(Duration),
    Send(Errno),
    Receive(Errno),
    /// The peer closed the connection while the named part of the reply was being read.
    Truncated(&'static str),
    Malformed(String),
}

impl Error {
    /// Whether the daemon cannot have seen the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::NotAccepted(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(err) => write!(f, "connect failed: {err}"),
            Self::NotAccepted(timeout) => write!(
                f,
                "connect failed: not accepted within {} ms",
                timeout.as_millis()
            ),
            Self::Send(err) => write!(f, "sending the request failed: {err}"),
            Self::Receive(err) if is_timeout(*err) => {
                write!(f, "timed out waiting for the reply: {err}")
            }
            Self::Receive(err) => write!(f, "reading the reply failed: {err}"),
            Self::Truncated(part) => write!(f, "connection closed while reading {part}"),
            Self::Malformed(what) => write!(f, "malformed HTTP reply: {what}"),
        }
    }
}

/// A socket timeout surfaces as EAGAIN on Linux.
fn is_timeout(err: Errno) -> bool {
    err == Errno::AGAIN || err == Errno::TIMEDOUT
}

/// Sends `POST target` with a JSON body and returns the reply once the daemon has sent all of it.
pub fn post_json(
    socket: &str,
    target: &str,
    body: &[u8],
    timeouts: &Timeouts,
) -> Result<Response, Error> {
    let stream = Fd::connect_unix(socket, timeouts.connect).map_err(|err| {
        if is_timeout(err) {
            Error::NotAccepted(timeouts.connect)
        } else {
            Error::Connect(err)
        }
    })?;
    stream.set_io_timeout(timeouts.io).map_err(Error::Connect)?;
    // No shutdown of the write half after sending: some servers (hyper among them) take a
    // half-close as the client giving up and drop the reply.
    if let Err(err) = sys::write_all(stream.raw(), &request(target, body)) {
        // A daemon that turns the call away (busy, caller not allowed) answers and closes
        // without reading the request; its answer is still waiting in the socket and says
        // more than the broken pipe.
        return read_response(Reader::new(&stream)).map_err(|_| Error::Send(err));
    }
    read_response(Reader::new(&stream))
}

/// Where the reply's bytes come from: the socket, or a test's slice.
pub trait Source {
    /// Reads some bytes into `buf`; 0 at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> sys::Result<usize>;
}

impl Source for &Fd {
    fn read(&mut self, buf: &mut [u8]) -> sys::Result<usize> {
        sys::read(self.raw(), buf)
    }
}

impl Source for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> sys::Result<usize> {
        let len = buf.len().min(self.len());
        let (head, rest) = self.split_at(len);
        buf[..len].copy_from_slice(head);
        *self = rest;
        Ok(len)
    }
}

/// A buffered reader over a `Source`, with only the three reads HTTP framing needs.
struct Reader<S> {
    source: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S: Source> Reader<S> {
    fn new(source: S) -> Self {
        Self {
            source,
            buf: alloc::vec![0; 8 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// The buffered bytes, reading more when there are none; empty at the end of the stream.
    fn fill(&mut self) -> sys::Result<&[u8]> {
        if self.start == self.end {
            self.end = self.source.read(&mut self.buf)?;
            self.start = 0;
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Moves up to `limit` bytes to `out`, stopping after `delimiter` if one is given, or at the
    /// end of the stream. Returns how many were moved.
    fn read_into(
        &mut self,
        limit: usize,
        delimiter: Option<u8>,
        out: &mut Vec<u8>,
    ) -> sys::Result<usize> {
        let mut moved = 0;
        while moved < limit {
            let available = self.fill()?;
            if available.is_empty() {
                break;
            }
            let mut take = available.len().min(limit - moved);
            let found = delimiter.and_then(|d| available[..take].iter().position(|&b| b == d));
            if let Some(at) = found {
                take = at + 1;
            }
            out.extend_from_slice(&available[..take]);
            self.start += take;
            moved += take;
            if found.is_some() {
                break;
            }
        }
        Ok(moved)
    }
}

fn request(target: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\n\
         Host: {HOST}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// How the end of the body is found (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn read_response<S: Source>(mut reader: Reader<S>) -> Result<Response, Error> {
    let status = parse_status_line(&read_line(&mut reader, "the status line")?)?;
    let mut body = Vec::new();
    match read_headers(&mut reader)? {
        Framing::Length(len) => read_exactly(&mut reader, len, &mut body, "the body")?,
        Framing::Chunked => read_chunked(&mut reader, &mut body)?,
        // The request said `Connection: close`, so the end of the stream ends the body.
        Framing::UntilClose => {
            reader
                .read_into(usize::MAX, None, &mut body)
                .map_err(Error::Receive)?;
        }
    }
    Ok(Response { status, body })
}

/// `HTTP/1.x NNN reason` -> NNN.
fn parse_status_line(line: &str) -> Result<u16, Error> {
    let malformed = || Error::Malformed(format!("bad status line {line:?}"));
    let rest = line.strip_prefix("HTTP/1.").ok_or_else(malformed)?;
    let mut parts = rest.splitn(3, ' ');
    let minor = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let is_digits = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(minor, 1) || !is_digits(code, 3) {
        return Err(malformed());
    }
    code.parse().map_err(|_| malformed())
}

/// Reads the header section up to its blank line and keeps only what frames the body.
fn read_headers<S: Source>(reader: &mut Reader<S>) -> Result<Framing, Error> {
    let mut content_length = None;
    let mut chunked = None;
    loop {
        let line = read_line(reader, "the headers")?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Error::Malformed(format!("bad header line {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != len) {
                return Err(Error::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides; repeated headers append to the list.
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        }
    }
    // Transfer-Encoding overrides Content-Length; a coding list not ending in chunked runs
    // until the connection closes.
    Ok(match (chunked, content_length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) | (None, None) => Framing::UntilClose,
        (None, Some(len)) => Framing::Length(len),
    })
}

fn parse_content_length(value: &str) -> Result<u64, Error> {
    let bad = || Error::Malformed(format!("bad Content-Length {value:?}"));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn read_chunked<S: Source>(reader: &mut Reader<S>, body: &mut Vec<u8>) -> Result<(), Error> {
    loop {
        let line = read_line(reader, "a chunk size")?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            break;
        }
        read_exactly(reader, size, body, "a chunk")?;
        if !read_line(reader, "a chunk")?.is_empty() {
            return Err(Error::Malformed("chunk data longer than its size".into()));
        }
    }
    // Trailer fields carry nothing the shim needs; skip to the blank line that ends them.
    while !read_line(reader, "the trailers")?.is_empty() {}
    Ok(())
}

/// `1a;ext=v` -> 26; chunk extensions are ignored.
fn parse_chunk_size(line: &str) -> Result<u64, Error> {
    let hex = line.split(';').next().unwrap_or_default().trim();
    let bad = || Error::Malformed(format!("bad chunk size line {line:?}"));
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

/// Appends exactly `len` bytes to `out`; growing as data arrives, so a bogus length cannot
/// make the shim allocate it up front.
fn read_exactly<S: Source>(
    reader: &mut Reader<S>,
    len: u64,
    out: &mut Vec<u8>,
    part: &'static str,
) -> Result<(), Error> {
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    let got = reader.read_into(limit, None, out).map_err(Error::Receive)?;
    if got < limit {
        return Err(Error::Truncated(part));
    }
    Ok(())
}

/// One line without its terminator. CRLF is the standard; a bare LF is accepted as well.
/// Bytes that are not UTF-8 are replaced: no line the shim interprets may contain them.
fn read_line<S: Source>(reader: &mut Reader<S>, part: &'static str) -> Result<String, Error> {
    let mut line = Vec::new();
    reader
        .read_into(MAX_LINE, Some(b'\n'), &mut line)
        .map_err(Error::Receive)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() == MAX_LINE {
            Error::Malformed(format!("a line in {part} is longer than {MAX_LINE} bytes"))
        } else {
            Error::Truncated(part)
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use socket2::{Domain, SockAddr, Socket, Type};

    fn parse(reply: &str) -> Result<Response, Error> {
        read_response(Reader::new(reply.as_bytes()))
    }

    /// A peer that sends its reply one byte per read, so every line and body straddles reads.
    struct Trickle<'a>(&'a [u8]);

    impl Source for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> sys::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_reply_arriving_a_byte_at_a_time_reads_the_same() {
        let replies = [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\n\r\n",
            "HTTP/1.0 400 Bad Request\r\n\r\n{\"code\":7}",
        ];
        for reply in replies {
            let whole = parse(reply).unwrap();
            let trickled = read_response(Reader::new(Trickle(reply.as_bytes()))).unwrap();
            assert_eq!((trickled.status, trickled.body), (whole.status, whole.body));
        }
    }

    fn body_of(reply: &str) -> (u16, String) {
        let response = parse(reply).unwrap();
        (response.status, String::from_utf8(response.body).unwrap())
    }

    #[test]
    fn request_is_a_complete_post() {
        let request = String::from_utf8(request("/v1/cni", b"{\"a\":1}")).unwrap();
        assert_eq!(
            request,
            "POST /v1/cni HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn content_length_body() {
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-Other: a:b\r\n\r\nhello";
        assert_eq!(body_of(reply), (200, "hello".into()));
    }

    #[test]
    fn content_length_stops_reading_at_the_length() {
        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello";
        assert_eq!(body_of(reply), (200, "he".into()));
    }

    #[test]
    fn body_until_close_without_length() {
        let reply = "HTTP/1.0 400 Bad Request\r\n\r\n{\"code\":7}";
        assert_eq!(body_of(reply), (400, "{\"code\":7}".into()));
    }

    #[test]
    fn empty_body() {
        let reply = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(body_of(reply), (204, String::new()));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5;name=x\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(
            body_of(reply),
            (200, "hello abcdefghijklmnopqrstuvwxy".into())
        );
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: gzip, Chunked\r\n\
                     \r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(body_of(reply), (200, "ok".into()));
    }

    #[test]
    fn bare_lf_line_endings() {
        let reply = "HTTP/1.1 201 Created\nContent-Length: 2\n\nok";
        assert_eq!(body_of(reply), (201, "ok".into()));
    }

    #[test]
    fn success_is_2xx_only() {
        let status = |status| {
            Response {
                status,
                body: vec![],
            }
            .is_success()
        };
        assert!(status(200) && status(204) && status(299));
        assert!(!status(199) && !status(300) && !status(400) && !status(500));
    }

    #[test]
    fn empty_reply_is_truncated_status_line() {
        assert!(matches!(
            parse(""),
            Err(Error::Truncated("the status line"))
        ));
    }

    #[test]
    fn truncated_replies() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Le", "the headers"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "the body",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "a chunk",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
                "a chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
                "the trailers",
            ),
        ];
        for (reply, part) in cases {
            match parse(reply) {
                Err(Error::Truncated(got)) => assert_eq!(got, part, "{reply:?}"),
                other => panic!("{reply:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_replies() {
        let cases = [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 20x OK\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n",
        ];
        for reply in cases {
            assert!(
                matches!(parse(reply), Err(Error::Malformed(_))),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn overlong_line_is_malformed_not_buffered() {
        let reply = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(matches!(parse(&reply), Err(Error::Malformed(_))));
    }

    #[test]
    fn an_answer_sent_before_the_request_was_read_is_still_returned() {
        let socket =
            std::env::temp_dir().join(format!("plexus-shim-busy-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let body = r#"{"code":11,"msg":"busy"}"#;
            write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            // Closed without reading: the client's request (bigger than any socket buffer)
            // cannot be written in full.
        });
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
        };
        let socket_path = socket.to_str().unwrap();
        let response = post_json(socket_path, "/", &vec![b' '; 8 << 20], &timeouts);
        server.join().unwrap();
        let _ = std::fs::remove_file(&socket);
        let response = response.unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, br#"{"code":11,"msg":"busy"}"#);
    }

    #[test]
    fn a_daemon_that_accepts_nothing_is_a_connect_timeout() {
        let dir = std::env::temp_dir().join(format!("plexus-shim-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("plexus.sock");
        let _ = std::fs::remove_file(&socket);
        // A backlog of zero takes one waiting connection; the next one waits for accept.
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&socket).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let _queued = UnixStream::connect(&socket).unwrap();
        let timeouts = Timeouts {
            connect: Duration::from_millis(200),
            io: Duration::from_secs(2),
        };
        let outcome = post_json(socket.to_str().unwrap(), "/", b"{}", &timeouts);
        let _ = std::fs::remove_dir_all(&dir);
        match outcome {
            Err(err @ Error::NotAccepted(_)) => {
                assert!(err.is_unreachable());
                assert_eq!(
                    err.to_string(),
                    "connect failed: not accepted within 200 ms"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_to_missing_socket_fails_fast() {
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(2),
        };
        let err = post_json("/nonexistent/plexus.sock", "/", b"", &timeouts);
        match err {
            Err(Error::Connect(err)) => assert_eq!(err, Errno(libc::ENOENT)),
            other => panic!("{other:?}"),
        }
    }
}
