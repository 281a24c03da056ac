//! The connections API's delivery path (contract §5.2): `POST`, `GET` and
//! `DELETE /v1/connections/{id}` on any node reach the WebSocket connection
//! on whichever data plane holds it.
//!
//! A connection id names its data plane (`tollgate_model::connection_id`),
//! so there is no table of connections anywhere. Each data plane opens a
//! `Connections.Open` stream beside its `Config.Watch`, to the same node
//! (again wherever Watch reconnects), and `Links` maps data-plane id → that
//! stream. The node holding the stream sends the command down it and waits
//! for the reply bearing the same request id; the data plane runs each
//! command in its own task, so one slow client holds up no other. A node
//! that does not hold the stream asks every peer at once (`Cluster.Deliver`)
//! and takes the answer of the one that does; the others say NOT_HERE.
//!
//! Every call has one deadline (`DELIVERY_TIMEOUT`, → 504), and a stream
//! that ends fails the calls waiting on it at once (→ 503).
//!
//! 410 is final for the caller (an application drops its record of the
//! connection), so it is said only when known: a malformed id, the holding
//! data plane says so, or every node answered and none holds the data plane
//! or lost its stream lately. A data plane that lost its stream moments ago
//! is between nodes (Watch reconnects within 0.1 to 3 s) while its clients
//! stay connected: the call is retried until the deadline, then 503. A node
//! that cannot be asked might hold it: 503 as well.

use std::collections::HashMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tollgate_model::connection_id::data_plane_of;
use tollgate_proto as pb;
use tollgate_proto::{connections_up, ConnectionOutcome as Outcome};
use tonic::{Request, Response, Status, Streaming};

use crate::error::{ApiError, Result};
use crate::peer::Peer;
use crate::raft::Node;
use crate::transport::Channels;

/// How long one connections-API call may take, peers and data plane included.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest body `POST /v1/connections/{id}` takes.
pub const MAX_BODY_BYTES: usize = 128 * 1024;
/// How long after its stream ended a data plane counts as reconnecting
/// (Watch's backoff tops out at 3 s, plus a connect timeout or two).
const RECONNECT_GRACE: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Commands queued on one stream before callers wait (within the deadline).
const STREAM_QUEUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Push,
    Get,
    Close,
}

impl Op {
    const ALL: [Op; 3] = [Op::Push, Op::Get, Op::Close];

    fn name(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Get => "get",
            Op::Close => "close",
        }
    }

    fn wire(self) -> pb::ConnectionOp {
        match self {
            Op::Push => pb::ConnectionOp::Push,
            Op::Get => pb::ConnectionOp::Get,
            Op::Close => pb::ConnectionOp::Close,
        }
    }
}

/// What a connections-API call answers when it succeeds.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Pushed, or closed.
    Done,
    /// `GET`: `{id, api, connected_at, last_active_at, source_ip, key_id, tenant, subject}`.
    Info(serde_json::Value),
}

type CommandTx = mpsc::Sender<Result<pb::ConnectionCommand, Status>>;
type Waiters = HashMap<u64, oneshot::Sender<pb::ConnectionReply>>;

/// One data plane's `Connections.Open` stream.
struct Link {
    commands: CommandTx,
    /// Calls waiting for their reply, by request id; `None` once the stream
    /// has ended, so no call waits on it any more.
    pending: Mutex<Option<Waiters>>,
}

impl Link {
    /// Register a call's waiter; false if the stream has ended.
    fn wait(&self, id: u64, tx: oneshot::Sender<pb::ConnectionReply>) -> bool {
        match self.pending.lock().expect("pending lock").as_mut() {
            Some(w) => w.insert(id, tx).is_none(),
            None => false,
        }
    }

    fn answer(&self, reply: pb::ConnectionReply) {
        let waiter = self
            .pending
            .lock()
            .expect("pending lock")
            .as_mut()
            .and_then(|w| w.remove(&reply.request_id));
        if let Some(w) = waiter {
            let _ = w.send(reply);
        }
    }

    /// The stream ended: every waiting call fails now, not at its deadline.
    fn close(&self) {
        self.pending.lock().expect("pending lock").take();
    }
}

/// Removes a call's waiter however the call ends (answered, deadline, or
/// the HTTP caller gone).
struct Waiting<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.link.pending.lock().expect("pending lock").as_mut() {
            w.remove(&self.id);
        }
    }
}

#[derive(Default)]
struct LinkMap {
    live: HashMap<String, Arc<Link>>,
    /// When each data plane's stream to this node last ended.
    left: HashMap<String, Instant>,
}

/// Where this node stands on a data plane.
enum Here {
    Held(Arc<Link>),
    /// Its stream here ended lately: it is probably reconnecting.
    Reconnecting,
    Unknown,
}

/// The data planes whose `Connections.Open` stream this node holds, and
/// the connections API's calls through them.
#[derive(Default)]
pub struct Links {
    map: Mutex<LinkMap>,
    next_request: AtomicU64,
    latency: Latency,
}

fn gone() -> ApiError {
    ApiError::Gone("the connection is closed or unknown".into())
}

fn no_answer() -> ApiError {
    ApiError::DeadlineExceeded(
        "no answer in time from the connection's data plane (it may still act on it)".into(),
    )
}

impl Links {
    /// A stream from `data_plane` opened. It replaces an older one under the
    /// id (a reconnect before the old stream is seen to end).
    fn attach(
        &self,
        data_plane: &str,
    ) -> (
        Arc<Link>,
        mpsc::Receiver<Result<pb::ConnectionCommand, Status>>,
    ) {
        let (commands, rx) = mpsc::channel(STREAM_QUEUE);
        let link = Arc::new(Link {
            commands,
            pending: Mutex::new(Some(Waiters::new())),
        });
        let mut map = self.map.lock().expect("links lock");
        map.left.remove(data_plane);
        map.live.insert(data_plane.to_string(), link.clone());
        (link, rx)
    }

    fn detach(&self, data_plane: &str, link: &Arc<Link>) {
        link.close();
        let mut map = self.map.lock().expect("links lock");
        if map
            .live
            .get(data_plane)
            .is_some_and(|l| Arc::ptr_eq(l, link))
        {
            map.live.remove(data_plane);
            let now = Instant::now();
            map.left
                .retain(|_, t| now.duration_since(*t) < RECONNECT_GRACE);
            map.left.insert(data_plane.to_string(), now);
        }
    }

    fn here(&self, data_plane: &str) -> Here {
        let map = self.map.lock().expect("links lock");
        if let Some(link) = map.live.get(data_plane) {
            return Here::Held(link.clone());
        }
        match map.left.get(data_plane) {
            Some(t) if t.elapsed() < RECONNECT_GRACE => Here::Reconnecting,
            _ => Here::Unknown,
        }
    }

    /// Send `cmd` down `link` and wait for its reply until `deadline`.
    async fn ask_link(
        &self,
        link: &Link,
        mut cmd: pb::ConnectionCommand,
        deadline: Instant,
    ) -> Result<pb::ConnectionReply> {
        let ended = || {
            ApiError::Unavailable(
                "the data plane's stream to the control plane ended before it answered".into(),
            )
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        cmd.request_id = id;
        let (tx, rx) = oneshot::channel();
        if !link.wait(id, tx) {
            return Err(ended());
        }
        let _waiting = Waiting { link, id };
        match tokio::time::timeout_at(deadline, link.commands.send(Ok(cmd))).await {
            Err(_) => return Err(no_answer()),
            Ok(Err(_)) => return Err(ended()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(no_answer()),
            Ok(Err(_)) => Err(ended()),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    /// A connections-API call asked of this node: through the stream held
    /// here, or through the peer that holds it.
    pub async fn call(
        &self,
        channels: &Channels,
        peers: &[Node],
        op: Op,
        connection_id: &str,
        body: Vec<u8>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let cmd = pb::ConnectionCommand {
            request_id: 0,
            op: op.wire() as i32,
            connection_id: connection_id.to_string(),
            body,
        };
        let ask_peers = |cmd: &pb::ConnectionCommand, timeout: Duration| {
            peers
                .iter()
                .map(|node| {
                    let mut peer = Peer::new(channels, node);
                    let cmd = cmd.clone();
                    Box::pin(async move { peer.deliver(cmd, timeout).await }) as PeerCall
                })
                .collect()
        };
        let result = self
            .route(cmd, started + DELIVERY_TIMEOUT, ask_peers)
            .await
            .and_then(|reply| answer(op, reply));
        self.latency.observe(op, started.elapsed());
        result
    }

    /// Find the data plane holding the connection and have it answer, here
    /// or through a peer, retrying while it is between nodes.
    async fn route<F>(
        &self,
        cmd: pb::ConnectionCommand,
        deadline: Instant,
        ask_peers: F,
    ) -> Result<pb::ConnectionReply>
    where
        F: Fn(&pb::ConnectionCommand, Duration) -> Vec<PeerCall>,
    {
        let data_plane = data_plane_of(&cmd.connection_id).ok_or_else(gone)?;
        loop {
            let mut reconnecting = match self.here(&data_plane) {
                Here::Held(link) => return self.ask_link(&link, cmd, deadline).await,
                Here::Reconnecting => true,
                Here::Unknown => false,
            };
            let timeout = deadline.saturating_duration_since(Instant::now());
            match first_holder(ask_peers(&cmd, timeout), deadline).await {
                Found::Held(reply) => return Ok(reply),
                Found::TimedOut => return Err(no_answer()),
                Found::Nowhere {
                    reconnecting: r,
                    unasked,
                } => {
                    reconnecting |= r;
                    if !reconnecting && unasked == 0 {
                        return Err(gone());
                    }
                    if !reconnecting {
                        return Err(ApiError::Unavailable(format!(
                            "{unasked} control-plane node(s) could not be asked, and one may hold the connection"
                        )));
                    }
                }
            }
            if Instant::now() + RETRY_EVERY >= deadline {
                return Err(ApiError::Unavailable(
                    "the data plane holding the connection is reconnecting to the control plane; try again".into(),
                ));
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// `Cluster.Deliver`: a peer's command for a data plane it does not
    /// hold. Answered through the stream held here, or NOT_HERE.
    pub async fn deliver_here(&self, cmd: pb::ConnectionCommand) -> pb::ConnectionReply {
        let request_id = cmd.request_id;
        let reply = |outcome: Outcome, reconnecting| pb::ConnectionReply {
            request_id,
            outcome: outcome as i32,
            info_json: Vec::new(),
            reconnecting,
        };
        let Some(data_plane) = data_plane_of(&cmd.connection_id) else {
            return reply(Outcome::Gone, false);
        };
        match self.here(&data_plane) {
            Here::Held(link) => {
                let deadline = Instant::now() + DELIVERY_TIMEOUT;
                match self.ask_link(&link, cmd, deadline).await {
                    Ok(r) => pb::ConnectionReply { request_id, ..r },
                    Err(_) => reply(Outcome::NoAnswer, false),
                }
            }
            Here::Reconnecting => reply(Outcome::NotHere, true),
            Here::Unknown => reply(Outcome::NotHere, false),
        }
    }

    /// Whether this node holds a stream from `data_plane`.
    pub fn holds(&self, data_plane: &str) -> bool {
        self.map
            .lock()
            .expect("links lock")
            .live
            .contains_key(data_plane)
    }

    /// Prometheus text for `/metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        self.latency.write(out);
    }
}

/// The data plane's reply as the API's answer.
fn answer(op: Op, reply: pb::ConnectionReply) -> Result<Answer> {
    match reply.outcome() {
        Outcome::Done if op == Op::Get => serde_json::from_slice(&reply.info_json)
            .map(Answer::Info)
            .map_err(|e| ApiError::Internal(format!("the data plane's connection info: {e}"))),
        Outcome::Done => Ok(Answer::Done),
        Outcome::Gone | Outcome::NotHere => Err(gone()),
        Outcome::TooManyRequests => Err(ApiError::ResourceExhausted(
            "Too Many Requests: the key's throttle refused the message".into(),
        )),
        Outcome::LimitExceeded => Err(ApiError::ResourceExhausted(
            "Limit Exceeded: the key's quota is spent".into(),
        )),
        Outcome::NoAnswer => Err(no_answer()),
        Outcome::Unspecified => Err(ApiError::Internal(
            "the data plane answered with no outcome".into(),
        )),
    }
}

/// One peer's `Cluster.Deliver` call.
type PeerCall = Pin<Box<dyn Future<Output = Result<pb::ConnectionReply, Status>> + Send>>;

enum Found {
    Held(pb::ConnectionReply),
    /// Every peer answered NOT_HERE or could not be asked.
    Nowhere {
        reconnecting: bool,
        unasked: usize,
    },
    /// A peer was still silent at the deadline.
    TimedOut,
}

/// The first answer from a peer holding the data plane, without waiting
/// for the rest.
async fn first_holder(calls: Vec<PeerCall>, deadline: Instant) -> Found {
    let mut calls: FuturesUnordered<PeerCall> = calls.into_iter().collect();
    let (mut reconnecting, mut unasked) = (false, 0);
    loop {
        match tokio::time::timeout_at(deadline, calls.next()).await {
            Err(_) => return Found::TimedOut,
            Ok(None) => {
                return Found::Nowhere {
                    reconnecting,
                    unasked,
                }
            }
            Ok(Some(Ok(r))) if r.outcome() == Outcome::NotHere => reconnecting |= r.reconnecting,
            Ok(Some(Ok(r))) => return Found::Held(r),
            Ok(Some(Err(status))) => {
                tracing::debug!(error = %status.message(), "a peer could not be asked for a connection");
                unasked += 1;
            }
        }
    }
}

/// `Connections.Open`, for data planes (cluster token).
pub struct ConnectionsService {
    pub links: Arc<Links>,
    /// Ends every stream, so a stopping node does not wait on its data planes.
    pub shutdown: CancellationToken,
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectionCommand, Status>> + Send>>;

#[tonic::async_trait]
impl pb::connections_server::Connections for ConnectionsService {
    type OpenStream = CommandStream;

    async fn open(
        &self,
        req: Request<Streaming<pb::ConnectionsUp>>,
    ) -> Result<Response<CommandStream>, Status> {
        let mut inbound = req.into_inner();
        let data_plane = match inbound.next().await {
            Some(Ok(pb::ConnectionsUp {
                msg: Some(connections_up::Msg::Hello(h)),
            })) if !h.node_id.is_empty() => h.node_id,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello naming the data plane",
                ))
            }
        };
        let (link, rx) = self.links.attach(&data_plane);
        let (links, shutdown) = (self.links.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            tracing::debug!(%data_plane, "connections stream opened");
            tokio::select! {
                _ = read_replies(&link, &mut inbound) => {}
                _ = shutdown.cancelled() => {}
            }
            links.detach(&data_plane, &link);
            tracing::debug!(%data_plane, "connections stream ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn read_replies(link: &Link, inbound: &mut Streaming<pb::ConnectionsUp>) {
    while let Some(Ok(up)) = inbound.next().await {
        if let Some(connections_up::Msg::Reply(r)) = up.msg {
            link.answer(r);
        }
    }
}

/// Upper bounds of the latency histogram's buckets, in milliseconds.
const BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/// Connections-API call latency by op; atomics, so `/metrics` takes no lock.
#[derive(Default)]
struct Latency {
    ops: [OpLatency; 3],
}

#[derive(Default)]
struct OpLatency {
    /// Calls in each bucket alone (made cumulative when written).
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    fn observe(&self, op: Op, took: Duration) {
        let o = &self.ops[op as usize];
        let us = took.as_micros() as u64;
        if let Some(i) = BUCKETS_MS.iter().position(|ms| us <= ms * 1000) {
            o.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        o.count.fetch_add(1, Ordering::Relaxed);
        o.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String) {
        let name = "tollgate_connections_api_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Connections-API calls asked of this node, from the call to its answer, by op.\n\
             # TYPE {name} histogram"
        );
        for op in Op::ALL {
            let o = &self.ops[op as usize];
            let op = op.name();
            let mut cumulative = 0;
            for (le, n) in BUCKETS_MS.iter().zip(&o.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let le = *le as f64 / 1000.0;
                let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}");
            }
            let count = o.count.load(Ordering::Relaxed);
            let sum = o.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Duration = Duration::from_secs(30);

    /// A well-formed connection id held by data plane `dp`.
    fn id_on(dp: &str) -> String {
        tollgate_model::connection_id::new_id(dp)
    }

    fn command(op: Op, id: &str) -> pb::ConnectionCommand {
        pb::ConnectionCommand {
            request_id: 0,
            op: op.wire() as i32,
            connection_id: id.to_string(),
            body: b"hello".to_vec(),
        }
    }

    fn says(outcome: Outcome, reconnecting: bool) -> pb::ConnectionReply {
        pb::ConnectionReply {
            outcome: outcome as i32,
            reconnecting,
            ..Default::default()
        }
    }

    fn peer_says(outcome: Outcome, reconnecting: bool) -> PeerCall {
        Box::pin(async move { Ok(says(outcome, reconnecting)) })
    }

    fn peer_silent() -> PeerCall {
        Box::pin(futures::future::pending())
    }

    fn peer_unreachable() -> PeerCall {
        Box::pin(async { Err(Status::unavailable("connection refused")) })
    }

    fn no_peers(_: &pb::ConnectionCommand, _: Duration) -> Vec<PeerCall> {
        Vec::new()
    }

    /// A data plane on the other end of a stream, answering every command
    /// with `outcome` (and, for a GET, an info naming the connection).
    fn data_plane(links: &Links, dp: &str, outcome: Outcome) -> Arc<Link> {
        let (link, mut rx) = links.attach(dp);
        let l = link.clone();
        tokio::spawn(async move {
            while let Some(Ok(cmd)) = rx.recv().await {
                let info_json = (cmd.op() == pb::ConnectionOp::Get)
                    .then(|| serde_json::to_vec(&serde_json::json!({"id": cmd.connection_id})))
                    .transpose()
                    .unwrap()
                    .unwrap_or_default();
                l.answer(pb::ConnectionReply {
                    request_id: cmd.request_id,
                    info_json,
                    ..says(outcome, false)
                });
            }
        });
        link
    }

    async fn route_with<F>(
        links: &Links,
        op: Op,
        id: &str,
        within: Duration,
        peers: F,
    ) -> Result<Answer>
    where
        F: Fn(&pb::ConnectionCommand, Duration) -> Vec<PeerCall>,
    {
        let reply = links
            .route(command(op, id), Instant::now() + within, peers)
            .await?;
        answer(op, reply)
    }

    fn code(r: &Result<Answer>) -> u16 {
        r.as_ref().err().map_or(200, ApiError::http_status)
    }

    #[tokio::test]
    async fn malformed_ids_are_gone_without_asking_anyone() {
        let links = Links::default();
        let never = |_: &pb::ConnectionCommand, _: Duration| -> Vec<PeerCall> {
            panic!("a malformed id needs no peer")
        };
        for id in [
            "",
            "short",
            "not*an*id*at*all*but*long*enough",
            "AAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let r = route_with(&links, Op::Push, id, FAR, never).await;
            assert!(matches!(r, Err(ApiError::Gone(_))), "{id:?}: {r:?}");
            assert_eq!(code(&r), 410);
        }
    }

    #[tokio::test]
    async fn the_stream_held_here_answers_each_op() {
        let links = Links::default();
        data_plane(&links, "dp-1", Outcome::Done);
        let id = id_on("dp-1");
        assert_eq!(
            route_with(&links, Op::Push, &id, FAR, no_peers)
                .await
                .unwrap(),
            Answer::Done
        );
        assert_eq!(
            route_with(&links, Op::Close, &id, FAR, no_peers)
                .await
                .unwrap(),
            Answer::Done
        );
        let info = route_with(&links, Op::Get, &id, FAR, no_peers)
            .await
            .unwrap();
        assert_eq!(info, Answer::Info(serde_json::json!({"id": id})));
        for (outcome, status) in [
            (Outcome::Gone, 410),
            (Outcome::TooManyRequests, 429),
            (Outcome::LimitExceeded, 429),
        ] {
            data_plane(&links, "dp-2", outcome);
            let r = route_with(&links, Op::Push, &id_on("dp-2"), FAR, no_peers).await;
            assert_eq!(code(&r), status, "{outcome:?}");
        }
    }

    #[tokio::test]
    async fn fan_out_takes_the_holders_answer_without_waiting_for_the_rest() {
        let links = Links::default();
        let peers = |_: &pb::ConnectionCommand, _: Duration| {
            vec![
                peer_silent(),
                peer_says(Outcome::NotHere, false),
                peer_says(Outcome::Done, false),
            ]
        };
        let started = Instant::now();
        let r = route_with(&links, Op::Push, &id_on("dp-9"), FAR, peers).await;
        assert_eq!(r.unwrap(), Answer::Done);
        assert!(started.elapsed() < Duration::from_secs(1));
        let peers = |_: &pb::ConnectionCommand, _: Duration| {
            vec![
                peer_says(Outcome::NotHere, false),
                peer_says(Outcome::LimitExceeded, false),
            ]
        };
        let r = route_with(&links, Op::Push, &id_on("dp-9"), FAR, peers).await;
        assert_eq!(code(&r), 429);
    }

    #[tokio::test]
    async fn nobody_holding_it_is_gone_but_a_peer_not_asked_is_not() {
        let links = Links::default();
        let id = id_on("dp-nowhere");
        let all_not_here = |_: &pb::ConnectionCommand, _: Duration| {
            vec![
                peer_says(Outcome::NotHere, false),
                peer_says(Outcome::NotHere, false),
            ]
        };
        assert_eq!(
            code(&route_with(&links, Op::Get, &id, FAR, all_not_here).await),
            410
        );
        assert_eq!(
            code(&route_with(&links, Op::Get, &id, FAR, no_peers).await),
            410
        );
        let one_down = |_: &pb::ConnectionCommand, _: Duration| {
            vec![peer_says(Outcome::NotHere, false), peer_unreachable()]
        };
        assert_eq!(
            code(&route_with(&links, Op::Get, &id, FAR, one_down).await),
            503
        );
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_gives_a_bounded_error() {
        let links = Links::default();
        let peers = |_: &pb::ConnectionCommand, _: Duration| {
            vec![peer_says(Outcome::NotHere, false), peer_silent()]
        };
        let started = Instant::now();
        let r = route_with(
            &links,
            Op::Push,
            &id_on("dp-1"),
            Duration::from_millis(300),
            peers,
        )
        .await;
        assert_eq!(code(&r), 504, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_data_plane_that_never_answers_gives_a_bounded_error() {
        let links = Links::default();
        let (link, _rx) = links.attach("dp-mute");
        let started = Instant::now();
        let r = route_with(
            &links,
            Op::Close,
            &id_on("dp-mute"),
            Duration::from_millis(300),
            no_peers,
        )
        .await;
        assert_eq!(code(&r), 504, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Its waiter went with the call.
        assert!(link.pending.lock().unwrap().as_ref().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_ends_fails_its_calls_at_once() {
        let links = Arc::new(Links::default());
        let (link, mut rx) = links.attach("dp-1");
        let call = {
            let links = links.clone();
            tokio::spawn(async move {
                route_with(&links, Op::Push, &id_on("dp-1"), FAR, no_peers).await
            })
        };
        rx.recv().await.expect("the command arrives").unwrap();
        links.detach("dp-1", &link);
        let r = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code(&r), 503, "{r:?}");
    }

    #[tokio::test]
    async fn a_data_plane_between_nodes_is_retried_then_unavailable() {
        let links = Links::default();
        let (link, _rx) = links.attach("dp-1");
        links.detach("dp-1", &link);
        let id = id_on("dp-1");
        // Lost here moments ago, nowhere else yet: not 410.
        let r = route_with(&links, Op::Push, &id, Duration::from_millis(500), no_peers).await;
        assert_eq!(code(&r), 503, "{r:?}");
        // A peer saying the same.
        let links = Links::default();
        let reconnecting =
            |_: &pb::ConnectionCommand, _: Duration| vec![peer_says(Outcome::NotHere, true)];
        let r = route_with(
            &links,
            Op::Push,
            &id,
            Duration::from_millis(500),
            reconnecting,
        )
        .await;
        assert_eq!(code(&r), 503, "{r:?}");
        // Found again before the deadline: answered.
        let links = Arc::new(Links::default());
        let (link, _rx) = links.attach("dp-1");
        links.detach("dp-1", &link);
        let back = links.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            data_plane(&back, "dp-1", Outcome::Done);
        });
        let r = route_with(&links, Op::Push, &id, FAR, no_peers).await;
        assert_eq!(r.unwrap(), Answer::Done);
    }

    #[tokio::test]
    async fn a_newer_stream_replaces_the_old_and_outlives_its_end() {
        let links = Links::default();
        let (old, _old_rx) = links.attach("dp-1");
        data_plane(&links, "dp-1", Outcome::Done);
        links.detach("dp-1", &old);
        let r = route_with(&links, Op::Push, &id_on("dp-1"), FAR, no_peers).await;
        assert_eq!(r.unwrap(), Answer::Done);
    }

    #[tokio::test]
    async fn peers_are_told_what_this_node_holds() {
        let links = Links::default();
        data_plane(&links, "dp-1", Outcome::Done);
        let r = links.deliver_here(command(Op::Push, &id_on("dp-1"))).await;
        assert_eq!(r.outcome(), Outcome::Done);
        let r = links.deliver_here(command(Op::Push, &id_on("dp-2"))).await;
        assert_eq!((r.outcome(), r.reconnecting), (Outcome::NotHere, false));
        let (link, _rx) = links.attach("dp-3");
        links.detach("dp-3", &link);
        let r = links.deliver_here(command(Op::Push, &id_on("dp-3"))).await;
        assert_eq!((r.outcome(), r.reconnecting), (Outcome::NotHere, true));
        let r = links.deliver_here(command(Op::Push, "malformed")).await;
        assert_eq!(r.outcome(), Outcome::Gone);
    }

    #[test]
    fn latency_is_a_cumulative_histogram_per_op() {
        let links = Links::default();
        links.latency.observe(Op::Push, Duration::from_millis(3));
        links.latency.observe(Op::Push, Duration::from_millis(40));
        links.latency.observe(Op::Get, Duration::from_secs(9));
        let mut out = String::new();
        links.write_metrics(&mut out);
        let name = "tollgate_connections_api_duration_seconds";
        assert!(out.contains(&format!("# TYPE {name} histogram")));
        assert!(out.contains(&format!("{name}_bucket{{op=\"push\",le=\"0.001\"}} 0\n")));
        assert!(out.contains(&format!("{name}_bucket{{op=\"push\",le=\"0.005\"}} 1\n")));
        assert!(out.contains(&format!("{name}_bucket{{op=\"push\",le=\"0.05\"}} 2\n")));
        assert!(out.contains(&format!("{name}_bucket{{op=\"get\",le=\"5\"}} 0\n")));
        assert!(out.contains(&format!("{name}_bucket{{op=\"get\",le=\"+Inf\"}} 1\n")));
        assert!(out.contains(&format!("{name}_count{{op=\"push\"}} 2\n")));
        assert!(out.contains(&format!("{name}_count{{op=\"close\"}} 0\n")));
    }
}
