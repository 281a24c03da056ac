//! A guard for request smuggling that hyper's parser tolerates.
//!
//! hyper accepts a request with both `Content-Length` and
//! `Transfer-Encoding` (it drops the length and closes the connection
//! afterwards); the contract wants a 400. The parser does not tell the
//! service, so this guard watches the bytes of an HTTP/1 connection as they
//! are read, finds each request head, and raises a flag the request path
//! checks. It follows message framing (Content-Length and chunked bodies) to
//! know where the next head starts, and stops looking after an upgrade or an
//! HTTP/2 preface. It never changes the bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Head bytes kept while looking for the end of a head; longer heads are
/// refused by hyper itself (431), so the guard stops watching.
const MAX_HEAD: usize = 64 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

enum State {
    Head(Vec<u8>),
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// Upgraded, HTTP/2, or gave up: stop looking.
    Off,
}

pub struct FramingGuard {
    state: State,
    flag: Arc<AtomicBool>,
}

impl FramingGuard {
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        Self {
            state: State::Head(Vec::new()),
            flag,
        }
    }

    pub fn off() -> Self {
        Self {
            state: State::Off,
            flag: Arc::default(),
        }
    }

    /// Feed bytes just read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head(buf) if buf.is_empty() => {
                    // The common case: the whole head arrived in one read;
                    // parse it in place, without copying or searching first.
                    if data.starts_with(H2_PREFACE) {
                        self.state = State::Off;
                        return;
                    }
                    match after_head(&self.flag, data) {
                        Some((len, next)) => {
                            self.state = next;
                            data = &data[len..];
                        }
                        None => {
                            // Partial: keep it, and from now on look for the
                            // end before parsing again (parsing on every
                            // read would be quadratic in a slow head).
                            buf.extend_from_slice(data);
                            return;
                        }
                    }
                }
                State::Head(buf) => {
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(data);
                    if buf.starts_with(H2_PREFACE) {
                        self.state = State::Off;
                        return;
                    }
                    let Some(end) = find(&buf[start..], b"\r\n\r\n").map(|i| start + i + 4) else {
                        if buf.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let consumed_from_data = end - (buf.len() - data.len());
                    let head = std::mem::take(buf);
                    self.state = match after_head(&self.flag, &head[..end]) {
                        Some((_, next)) => next,
                        None => State::Off,
                    };
                    data = &data[consumed_from_data..];
                }
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let Some(i) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > 4096 {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let text = String::from_utf8_lossy(line);
                    let hex = text.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(hex, 16) {
                        Ok(0) => State::Trailers(Vec::new()),
                        Ok(n) => State::ChunkData(n),
                        Err(_) => State::Off, // hyper answers 400 itself
                    };
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkDataEnd(2);
                    }
                }
                State::ChunkDataEnd(n) => {
                    let take = (*n as usize).min(data.len());
                    *n -= take as u8;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    let Some(i) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let empty = line.iter().chain(&data[..i]).all(|&b| b == b'\r');
                    data = &data[i + 1..];
                    self.state = if empty {
                        State::Head(Vec::new())
                    } else {
                        State::Trailers(Vec::new())
                    };
                }
            }
        }
    }
}

/// Parse the head at the start of `data`: its length and the state after
/// it, or None if it is not complete yet. Raises `flag` for an ambiguous
/// head.
fn after_head(flag: &AtomicBool, data: &[u8]) -> Option<(usize, State)> {
    // Uninitialized: zeroing 128 headers cost more than the parse.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(data, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        // Malformed heads are hyper's to refuse.
        Err(_) => return Some((data.len(), State::Off)),
    };
    Some((len, state_after(flag, &req)))
}

fn state_after(flag: &AtomicBool, req: &httparse::Request<'_, '_>) -> State {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            if content_length.is_none() {
                return State::Off;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te && content_length.is_some() {
        flag.store(true, Ordering::Release);
        return State::Off;
    }
    if upgrade {
        State::Off
    } else if chunked {
        State::ChunkSize(Vec::new())
    } else if te {
        State::Off
    } else {
        match content_length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(chunks: &[&[u8]]) -> bool {
        let flag = Arc::new(AtomicBool::new(false));
        let mut g = FramingGuard::new(flag.clone());
        for c in chunks {
            g.feed(c);
        }
        flag.load(Ordering::Acquire)
    }

    #[test]
    fn flags_cl_and_te_together() {
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-",
            b"Length: 4\r\n\r\n"
        ]));
    }

    #[test]
    fn follows_bodies_to_the_next_head() {
        // The body of the first request looks like a smuggling head, but it
        // is a body: not flagged. The second request is flagged.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let first = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        assert!(!flagged(&[first.as_bytes(), body]));
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(!flagged(&[chunked, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(flagged(&[
            chunked,
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // Byte by byte too.
        let all = [
            &chunked[..],
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        .concat();
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert!(flagged(&bytes));
    }

    #[test]
    fn stops_after_upgrade_and_h2() {
        assert!(!flagged(&[
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!flagged(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}
