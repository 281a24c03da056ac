//! `tollgate echo`: a small upstream for demos, tests and benchmarks. It
//! answers every request with 200 and a JSON description of what it got.
//! Two query parameters make it misbehave on purpose: `status=N` answers
//! with that status, and `delay_ms=N` waits first.
//!
//! It also stands in for the two AWS shapes a gateway calls out to, so a
//! function route and a request authorizer can be tried (and benchmarked)
//! without AWS: `POST /2015-03-31/functions/{name}/invocations` answers as
//! the Lambda Invoke API does, with a 2.0 proxy result whose body says
//! which function ran and how long the event was; `POST /authorize`
//! answers as a request authorizer with a simple response that allows.
//!
//! Its JSON is written by hand (plain strings copied whole), not through a
//! JSON tree: it sits behind every proxy the bench compares, so its cost
//! per header byte must stay small beside the proxy's.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The JSON description of a request: `body_length`, `headers` (in the
/// order they came, repeated fields joined with ", "), `method`, `path`,
/// `query` and `version`.
///
/// Written by hand rather than through a JSON tree: this echo sits behind
/// every proxy the bench compares, and its cost per header byte must stay
/// small next to the proxy's, or the proxy that sends more fields (the
/// contract's `x-request-id`, `traceparent`...) pays for the echo's work.
fn describe(parts: &http::request::Parts, query: &str, body_length: usize) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(192 + 96 * parts.headers.len());
    let _ = write!(out, "{{\"body_length\":{body_length},\"headers\":{{");
    let mut fields = parts.headers.iter().peekable();
    let mut first = true;
    while let Some((name, value)) = fields.next() {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        push_json_str(&mut out, name.as_str().as_bytes());
        out.push(b':');
        // A map yields a name's values one after another.
        match fields.next_if(|(next, _)| *next == name) {
            None => push_json_str(&mut out, value.as_bytes()),
            Some((_, second)) => {
                let mut joined = format!("{}, {}", text(value), text(second));
                while let Some((_, more)) = fields.next_if(|(next, _)| *next == name) {
                    joined.push_str(", ");
                    joined.push_str(&text(more));
                }
                push_json_str(&mut out, joined.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"},\"method\":");
    push_json_str(&mut out, parts.method.as_str().as_bytes());
    out.extend_from_slice(b",\"path\":");
    push_json_str(&mut out, parts.uri.path().as_bytes());
    out.extend_from_slice(b",\"query\":");
    push_json_str(&mut out, query.as_bytes());
    out.extend_from_slice(b",\"version\":");
    push_json_str(&mut out, version_name(parts.version).as_bytes());
    out.push(b'}');
    out
}

/// A header value as text; bytes that are not UTF-8 become U+FFFD.
fn text(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// Whether `bytes` can go into a JSON string as they are: ASCII, with no
/// control character, `"` or `\\`.
fn is_plain_json(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is zero / below `n` (n <= 128): the bit
    // tricks from "Bit Twiddling Hacks", eight bytes per step.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let has_below = |x: u64, n: u8| x.wrapping_sub(ONES * n as u64) & !x & HIGHS != 0;
    let plain_byte = |b: &u8| (0x20..0x80).contains(b) && *b != b'"' && *b != b'\\';
    let mut words = bytes.chunks_exact(8);
    let words_plain = words.by_ref().all(|w| {
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        x & HIGHS == 0
            && !has_below(x, 0x20)
            && !has_zero(x ^ (ONES * b'"' as u64))
            && !has_zero(x ^ (ONES * b'\\' as u64))
    });
    words_plain && words.remainder().iter().all(plain_byte)
}

/// Appends `bytes` as a JSON string. Most strings here are plain ASCII and
/// are copied whole; the others are decoded (U+FFFD for bytes that are not
/// UTF-8) and escaped by serde_json.
fn push_json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    if is_plain_json(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, &String::from_utf8_lossy(bytes))
            .expect("writing JSON to memory cannot fail");
    }
}

/// The last value of `name` in a query string, as a map built from it would hold.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.rsplit('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The answer as a Lambda function or a request authorizer, for the
/// paths that call for one.
fn stand_in(parts: &http::request::Parts, event_length: usize) -> Option<String> {
    if parts.method != http::Method::POST {
        return None;
    }
    let path = parts.uri.path();
    if path == "/authorize" {
        return Some(r#"{"isAuthorized":true,"context":{"authorizer":"tollgate echo"}}"#.into());
    }
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")?;
    let body = serde_json::json!({"function": name, "event_length": event_length}).to_string();
    Some(
        serde_json::json!({"statusCode": 200, "headers": {"content-type": "application/json"}, "body": body})
            .to_string(),
    )
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let body_length = if body.is_end_stream() {
        0
    } else {
        body.collect().await.map_or(0, |b| b.to_bytes().len())
    };
    if let Some(ms) = query_param(query, "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = query_param(query, "status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let out = match stand_in(&parts, body_length) {
        Some(answer) => answer.into_bytes(),
        None => describe(&parts, query, body_length),
    };
    let mut res = Response::new(Full::new(Bytes::from(out)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// Serve until `shutdown`. HTTP/1.1 and h2c.
pub async fn run(listener: TcpListener, shutdown: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(echo));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 exchange with a fresh echo; returns the status line and body.
    async fn exchange(request: &[u8]) -> (String, serde_json::Value) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(listener, shutdown.clone()));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        shutdown.cancel();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap().to_string();
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn the_answer_describes_the_request() {
        let (status, v) = exchange(
            b"POST /a/b?x=1&status=201&status=202 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\n\
              X-Quote: say \"hi\" \\ \t there\r\nX-Two: 2\r\nX-Bytes: caf\xc3\xa9 \xff\r\n\
              X-Two: 3\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert_eq!(
            status, "HTTP/1.1 202 Accepted",
            "the last status parameter wins"
        );
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1&status=201&status=202");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["body_length"], 5);
        assert_eq!(
            v["headers"]["x-two"], "1, 2, 3",
            "repeated fields are joined"
        );
        assert_eq!(
            v["headers"]["x-bytes"], "café \u{fffd}",
            "not UTF-8: replaced"
        );
        assert_eq!(v["headers"]["x-quote"], "say \"hi\" \\ \t there", "escaped");
        assert_eq!(v["headers"]["host"], "h");
    }

    #[test]
    fn plain_json_bytes_are_told_from_the_rest_at_every_position() {
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert!(is_plain_json(&plain), "{len} plain bytes");
            for at in 0..len {
                for bad in [0x00, 0x1f, b'"', b'\\', 0x80, 0xff] {
                    let mut with = plain.clone();
                    with[at] = bad;
                    assert!(!is_plain_json(&with), "{bad:#x} at {at} of {len}");
                }
                for good in [0x20, b'!', b'#', b'[', b']', 0x7f] {
                    let mut with = plain.clone();
                    with[at] = good;
                    assert!(is_plain_json(&with), "{good:#x} at {at} of {len}");
                }
            }
        }
    }

    #[tokio::test]
    async fn it_answers_as_a_lambda_function_and_as_a_request_authorizer() {
        let (status, v) = exchange(
            b"POST /2015-03-31/functions/orders/invocations HTTP/1.1\r\nHost: h\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(v["statusCode"], 200);
        let body: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"function": "orders", "event_length": 2})
        );
        let (_, v) = exchange(
            b"POST /authorize HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .await;
        assert_eq!(v["isAuthorized"], true);
        // Other methods and paths are echoed as before.
        let (_, v) =
            exchange(b"GET /authorize HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
        assert_eq!(v["path"], "/authorize");
    }

    #[tokio::test]
    async fn a_bodiless_get_answers_200() {
        let (status, v) = exchange(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(v["body_length"], 0);
        assert_eq!(v["query"], "");
    }
}
