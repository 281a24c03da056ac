//! `tollgate echo`: a small upstream for demos, tests and benchmarks. It
//! answers every request with 200 and a JSON description of what it got.
//! Two query parameters make it misbehave on purpose: `status=N` answers
//! with that status, and `delay_ms=N` waits first.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the echo answers with. Fields in name order, as the JSON has
/// always had them.
#[derive(serde::Serialize)]
struct Echoed<'a> {
    body_length: usize,
    headers: Fields<'a>,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    version: &'static str,
}

/// The request's header fields as one JSON object, names in order, repeated
/// fields joined with ", ". Serialized straight from the map: the echo sits
/// behind every proxy the bench compares, so its cost per field must not
/// favour the proxy that sends fewer fields.
struct Fields<'a>(&'a HeaderMap);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut names: Vec<&str> = self.0.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        let mut map = serializer.serialize_map(Some(names.len()))?;
        for name in names {
            let mut values = self.0.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()));
            let mut joined = values.next().unwrap_or_default();
            for more in values {
                let all = joined.to_mut();
                all.push_str(", ");
                all.push_str(&more);
            }
            map.serialize_entry(name, &joined)?;
        }
        map.end()
    }
}

/// The last value of `name` in a query string, as a map built from it would hold.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
        .last()
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
    let echoed = Echoed {
        body_length,
        headers: Fields(&parts.headers),
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query,
        version: version_name(parts.version),
    };
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, &echoed).expect("serializing to memory cannot fail");
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
    async fn exchange(request: &str) -> (String, serde_json::Value) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(listener, shutdown.clone()));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
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
            "POST /a/b?x=1&status=201&status=202 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\n\
             X-Two: 2\r\nX-Bytes: café\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 202 Accepted", "the last status parameter wins");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1&status=201&status=202");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["body_length"], 5);
        assert_eq!(v["headers"]["x-two"], "1, 2", "repeated fields are joined");
        assert_eq!(v["headers"]["x-bytes"], "café");
        assert_eq!(v["headers"]["host"], "h");
        let names: Vec<&String> = v["headers"].as_object().unwrap().keys().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "names in order");
    }

    #[tokio::test]
    async fn a_bodiless_get_answers_200() {
        let (status, v) = exchange("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(v["body_length"], 0);
        assert_eq!(v["query"], "");
    }
}
