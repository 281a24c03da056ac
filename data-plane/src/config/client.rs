//! The `Config.Watch` client: one stream at a time to one control-plane
//! node, reconnecting with jittered exponential backoff and rotating through
//! every listed node.
//!
//! Each update is converted, checked against the revision held (never go
//! back, deltas must sit on what is held), validated, and handed to the
//! `ConfigApplier`. Success is ACKed and saved to the state file; any
//! failure is NACKed with the reason, and the held config stays. On
//! reconnect the hello carries the held revision, so the new node sends
//! exactly what was missed.
//!
//! Each Watch stream brings along a `Connections.Open` stream to the same
//! node on the same channel (`connections`), ended with it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_model::ConfigSet;
use tollgate_proto::auth::BearerToken;
use tollgate_proto::config_client::ConfigClient as WatchClient;
use tollgate_proto::{watch_request, Ack, ConfigUpdate, Hello, Nack, WatchRequest};
use tonic::transport::Endpoint;

use super::StateWriter;
use crate::ConfigApplier;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Which control-plane node the client streams from, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    pub endpoint: Option<String>,
}

pub struct ConfigClient {
    /// gRPC URLs of control-plane nodes, e.g. `http://10.0.0.1:9090`.
    pub endpoints: Vec<String>,
    pub cluster_token: String,
    pub tls: Option<tollgate_proto::tls::MutualTls>,
    pub node_id: String,
    /// The proxy address shown in `GET /v1/cluster`.
    pub advertise_addr: String,
    pub state: Option<StateWriter>,
    /// The WebSocket connections the connections API reaches.
    pub connections: Arc<crate::websocket::Connections>,
}

/// Why one stream ended.
enum StreamEnd {
    Shutdown,
    /// The stream delivered at least one update before it broke.
    Broke {
        progressed: bool,
        reason: String,
    },
}

impl ConfigClient {
    /// Stream config until `shutdown`, starting from `held` (the state file's
    /// config, or empty). `connection` reports which node is in use.
    pub async fn run(
        self,
        applier: Arc<dyn ConfigApplier>,
        mut held: ConfigSet,
        connection: watch::Sender<Connection>,
        shutdown: CancellationToken,
    ) {
        assert!(!self.endpoints.is_empty(), "at least one control-plane URL");
        let mut next = rand::thread_rng().gen_range(0..self.endpoints.len());
        let mut backoff = BACKOFF_MIN;
        loop {
            let endpoint = self.endpoints[next % self.endpoints.len()].clone();
            next += 1;
            let end = self
                .stream_once(
                    &endpoint,
                    applier.as_ref(),
                    &mut held,
                    &connection,
                    &shutdown,
                )
                .await;
            connection.send_replace(Connection::default());
            match end {
                StreamEnd::Shutdown => return,
                StreamEnd::Broke { progressed, reason } => {
                    if progressed {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::warn!(%endpoint, %reason, retry_in_ms = backoff.as_millis() as u64, "config stream ended");
                }
            }
            // Full jitter between half and all of the backoff, so that data
            // planes cut off together do not come back together.
            let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn stream_once(
        &self,
        endpoint: &str,
        applier: &dyn ConfigApplier,
        held: &mut ConfigSet,
        connection: &watch::Sender<Connection>,
        shutdown: &CancellationToken,
    ) -> StreamEnd {
        let broke = |progressed, reason: String| StreamEnd::Broke { progressed, reason };
        let channel = match &self.tls {
            Some(tls) => tls.endpoint(endpoint),
            None => Endpoint::from_shared(endpoint.to_string()),
        };
        let channel = match channel {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5)),
            Err(e) => return broke(false, format!("bad URL: {e}")),
        };
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return StreamEnd::Shutdown,
            c = channel.connect() => match c {
                Ok(c) => c,
                Err(e) => return broke(false, format!("connect: {}", error_chain(&e))),
            },
        };
        let token = BearerToken::new(&self.cluster_token);
        let link_channel = channel.clone();
        let mut client = WatchClient::with_interceptor(channel, token.clone());
        let (tx, rx) = mpsc::channel(8);
        let hello = WatchRequest {
            msg: Some(watch_request::Msg::Hello(Hello {
                node_id: self.node_id.clone(),
                addr: self.advertise_addr.clone(),
                revision: held.revision,
            })),
        };
        tx.send(hello).await.expect("receiver is alive");
        let mut inbound = tokio::select! {
            _ = shutdown.cancelled() => return StreamEnd::Shutdown,
            r = client.watch(ReceiverStream::new(rx)) => match r {
                Ok(r) => r.into_inner(),
                Err(s) => return broke(false, format!("watch: {}", s.message())),
            },
        };
        connection.send_replace(Connection {
            endpoint: Some(endpoint.to_string()),
        });
        let link = shutdown.child_token();
        let _link_ends_with_watch = link.clone().drop_guard();
        tokio::spawn(super::connections::run(
            link_channel,
            token,
            self.node_id.clone(),
            self.connections.clone(),
            link,
        ));
        tracing::info!(%endpoint, revision = held.revision, "streaming config");
        let mut progressed = false;
        loop {
            let update = tokio::select! {
                _ = shutdown.cancelled() => return StreamEnd::Shutdown,
                m = inbound.next() => match m {
                    Some(Ok(u)) => u,
                    Some(Err(s)) => return broke(progressed, s.message().to_string()),
                    None => return broke(progressed, "closed by the server".into()),
                },
            };
            progressed = true;
            let revision = update.revision;
            let reply = match accept(update, held, applier) {
                Ok(next) => {
                    *held = next;
                    if let Some(state) = &self.state {
                        state.save(held);
                    }
                    watch_request::Msg::Ack(Ack { revision })
                }
                Err(reason) => {
                    tracing::warn!(revision, %reason, held = held.revision, "refusing config");
                    watch_request::Msg::Nack(Nack { revision, reason })
                }
            };
            if tx.send(WatchRequest { msg: Some(reply) }).await.is_err() {
                return broke(progressed, "request stream closed".into());
            }
        }
    }
}

/// An error with its causes, for log lines ("transport error" alone says
/// little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Everything between receiving an update and ACKing it. `Err` carries the
/// NACK reason; `held` is then untouched.
pub fn accept(
    update: ConfigUpdate,
    held: &ConfigSet,
    applier: &dyn ConfigApplier,
) -> Result<ConfigSet, String> {
    let delta = super::convert::delta(update).map_err(|e| e.to_string())?;
    let next = held.apply(&delta).map_err(|e| e.to_string())?;
    for r in &delta.upserts {
        r.validate()
            .map_err(|e| format!("{} {:?}: {e}", r.kind().as_str(), r.id()))?;
    }
    applier.apply(&next, &delta)?;
    Ok(next)
}
