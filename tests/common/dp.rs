//! Data planes, upstreams and a mock control plane for tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_data_plane::{DataPlaneConfig, DataPlaneHandle, Limits};
use tollgate_proto::{watch_request, ConfigUpdate, WatchRequest};
use tonic::{Request, Response, Status, Streaming};

use super::CLUSTER_TOKEN;

pub async fn start_dp(control_plane: Vec<String>, state_dir: Option<&Path>) -> DataPlaneHandle {
    start_dp_with(control_plane, state_dir, Limits::default(), None).await
}

pub async fn start_dp_with(
    control_plane: Vec<String>,
    state_dir: Option<&Path>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> DataPlaneHandle {
    let o = DpOptions {
        state_dir,
        limits,
        tls,
        ..DpOptions::default()
    };
    start_dp_opts(control_plane, o).await
}

/// A data plane under a chosen id (`--node-id`).
pub async fn start_dp_named(control_plane: Vec<String>, node_id: &str) -> DataPlaneHandle {
    let o = DpOptions {
        node_id: Some(node_id),
        ..DpOptions::default()
    };
    start_dp_opts(control_plane, o).await
}

/// A data plane presenting `cluster_token` to the control plane.
pub async fn start_dp_with_token(
    control_plane: Vec<String>,
    cluster_token: &str,
) -> DataPlaneHandle {
    let o = DpOptions {
        cluster_token: Some(cluster_token),
        ..DpOptions::default()
    };
    start_dp_opts(control_plane, o).await
}

/// A data plane with mutual TLS towards the control plane.
pub async fn start_dp_mtls(
    control_plane: Vec<String>,
    cluster_tls: Option<tollgate_proto::tls::MutualTls>,
) -> DataPlaneHandle {
    let o = DpOptions {
        cluster_tls,
        ..DpOptions::default()
    };
    start_dp_opts(control_plane, o).await
}

/// How a test's data plane differs from the default one.
#[derive(Default)]
pub struct DpOptions<'a> {
    pub state_dir: Option<&'a Path>,
    pub limits: Limits,
    /// TLS on the proxy port.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Mutual TLS towards the control plane.
    pub cluster_tls: Option<tollgate_proto::tls::MutualTls>,
    /// Default: a random one.
    pub node_id: Option<&'a str>,
    /// Default: `CLUSTER_TOKEN`.
    pub cluster_token: Option<&'a str>,
    /// Default: off.
    pub access_log: Option<tollgate_data_plane::AccessLogTarget>,
}

pub async fn start_dp_opts(control_plane: Vec<String>, o: DpOptions<'_>) -> DataPlaneHandle {
    tollgate_data_plane::start(DataPlaneConfig {
        node_id: o
            .node_id
            .map_or_else(|| format!("dp-{:x}", rand::random::<u32>()), str::to_string),
        control_plane,
        cluster_token: o.cluster_token.unwrap_or(CLUSTER_TOKEN).into(),
        cluster_tls: o.cluster_tls,
        proxy_listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status_listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        state_dir: o.state_dir.map(Path::to_path_buf),
        tls: o.tls,
        limits: o.limits,
        grace: Duration::from_secs(5),
        access_log: o
            .access_log
            .unwrap_or(tollgate_data_plane::AccessLogTarget::Off),
        cache_max_bytes: tollgate_data_plane::cache::DEFAULT_CAPACITY_BYTES,
    })
    .await
    .expect("data plane starts")
}

/// Wait until `dp` holds at least `revision`.
pub async fn wait_for_revision(dp: &DataPlaneHandle, revision: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while dp.gateway.snapshot().revision() < revision {
        assert!(
            Instant::now() < deadline,
            "data plane stuck at revision {} (want {revision})",
            dp.gateway.snapshot().revision()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The data plane's `/metrics` page.
pub async fn metrics_text(dp: &DataPlaneHandle) -> String {
    http()
        .get(format!("http://{}/metrics", dp.status_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Poll `f` until it returns true.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The `tollgate echo` server on an ephemeral port.
pub async fn start_echo() -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(tollgate_data_plane::echo::run(l, stop.clone()));
    (addr, stop)
}

/// A scriptable upstream: counts hits, answers with `status` (and a
/// `x-upstream: name` header), and `/healthz` follows `healthy`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub status: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> TestUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicUsize::new(200));
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let (h, s, ok, st) = (hits.clone(), status.clone(), healthy.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => r.unwrap().0,
                };
                let (h, s, ok) = (h.clone(), s.clone(), ok.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (h, s, ok) = (h.clone(), s.clone(), ok.clone());
                    async move {
                        let code = if req.uri().path() == "/healthz" {
                            if ok.load(Ordering::SeqCst) {
                                200
                            } else {
                                500
                            }
                        } else {
                            h.fetch_add(1, Ordering::SeqCst);
                            s.load(Ordering::SeqCst) as u16
                        };
                        let res = http::Response::builder()
                            .status(code)
                            .header("x-upstream", name)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, Infallible>(res)
                    }
                });
                let st = st.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = st.cancelled() => {} }
                });
            }
        });
        TestUpstream {
            addr,
            hits,
            status,
            healthy,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a data plane answered to a pushed update.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ack(u64),
    Nack(u64, String),
}

/// A mock control plane: a real `Config` gRPC server whose updates the test
/// pushes by hand, and whose ACKs and NACKs it reads back.
pub struct MockControlPlane {
    pub url: String,
    push: PushSlot,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<Reply>>,
    pub hellos: Arc<Mutex<Vec<u64>>>,
    stop: CancellationToken,
}

struct MockService {
    push: PushSlot,
    replies: mpsc::UnboundedSender<Reply>,
    hellos: Arc<Mutex<Vec<u64>>>,
}

/// Where the current stream's sender sits, for the test to push through.
type PushSlot = Arc<Mutex<Option<mpsc::Sender<Result<ConfigUpdate, Status>>>>>;

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl tollgate_proto::config_server::Config for MockService {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let mut inbound = req.into_inner();
        match inbound.next().await {
            Some(Ok(WatchRequest {
                msg: Some(watch_request::Msg::Hello(h)),
            })) => self.hellos.lock().unwrap().push(h.revision),
            _ => return Err(Status::invalid_argument("hello first")),
        }
        let (tx, rx) = mpsc::channel(16);
        *self.push.lock().unwrap() = Some(tx);
        let replies = self.replies.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                let r = match m.msg {
                    Some(watch_request::Msg::Ack(a)) => Reply::Ack(a.revision),
                    Some(watch_request::Msg::Nack(n)) => Reply::Nack(n.revision, n.reason),
                    _ => continue,
                };
                let _ = replies.send(r);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl MockControlPlane {
    pub async fn start() -> MockControlPlane {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let push = Arc::new(Mutex::new(None));
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let (rtx, rrx) = mpsc::unbounded_channel();
        let svc = MockService {
            push: push.clone(),
            replies: rtx,
            hellos: hellos.clone(),
        };
        let stop = CancellationToken::new();
        let st = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(tollgate_proto::config_server::ConfigServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    st.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        MockControlPlane {
            url,
            push,
            replies: tokio::sync::Mutex::new(rrx),
            hellos,
            stop,
        }
    }

    /// Push an update once a data plane is connected, and return its reply.
    pub async fn push(&self, update: ConfigUpdate) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        let tx = loop {
            if let Some(tx) = self.push.lock().unwrap().clone() {
                break tx;
            }
            assert!(Instant::now() < deadline, "no data plane connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tx.send(Ok(update)).await.expect("stream open");
        tokio::time::timeout(Duration::from_secs(10), self.replies.lock().await.recv())
            .await
            .expect("a reply within 10 s")
            .expect("reply channel open")
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// A `Resource` message for a JSON document.
pub fn resource(
    kind: tollgate_proto::ResourceKind,
    id: &str,
    json: serde_json::Value,
) -> tollgate_proto::Resource {
    tollgate_proto::Resource {
        kind: kind as i32,
        id: id.into(),
        json: serde_json::to_vec(&json).unwrap(),
    }
}

pub fn full_update(revision: u64, apis: &[serde_json::Value]) -> ConfigUpdate {
    ConfigUpdate {
        revision,
        full: true,
        base_revision: 0,
        upserts: apis
            .iter()
            .map(|a| {
                resource(
                    tollgate_proto::ResourceKind::Api,
                    a["id"].as_str().unwrap(),
                    a.clone(),
                )
            })
            .collect(),
        removals: vec![],
    }
}

/// A data plane fed by a mock control plane holding `apis`.
pub async fn dp_with_apis(
    apis: &[serde_json::Value],
    limits: Limits,
) -> (MockControlPlane, DataPlaneHandle) {
    let cp = MockControlPlane::start().await;
    let dp = start_dp_with(vec![cp.url.clone()], None, limits, None).await;
    assert_eq!(cp.push(full_update(1, apis)).await, Reply::Ack(1));
    (cp, dp)
}
