//! The connections API's end on the data plane: a `Connections.Open`
//! stream to the control-plane node that `Config.Watch` streams from, on
//! the same channel, opened with each Watch stream and ended with it (so
//! the node this data plane watches from is the one that holds it, and a
//! Watch that moves to another node takes this stream along).
//!
//! The first message names this data plane; then each command (push, get,
//! close, for one connection) runs in its own task against the registry
//! (`websocket::Connections`) and is answered by request id, so one slow
//! client delays no other. A command never outlives the control plane's
//! own deadline by much: the control plane has given up on it by then.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_proto::auth::BearerToken;
use tollgate_proto::connections_client::ConnectionsClient;
use tollgate_proto::{
    connections_up, ConnectionCommand, ConnectionOp, ConnectionOutcome, ConnectionReply,
    ConnectionsHello, ConnectionsUp,
};
use tonic::transport::Channel;

use crate::websocket::{Connections, Delivery};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// As long as the control plane waits (its `DELIVERY_TIMEOUT`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands running at once; past it, reading the stream waits.
const MAX_IN_FLIGHT: usize = 4096;

/// Keep a `Connections.Open` stream open on `channel` until `stop`,
/// reopening it (with backoff) if it breaks while the channel lives.
pub(crate) async fn run(
    channel: Channel,
    token: BearerToken,
    node_id: String,
    connections: Arc<Connections>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let opened = tokio::time::Instant::now();
        let client = ConnectionsClient::with_interceptor(channel.clone(), token.clone());
        let end = tokio::select! {
            _ = stop.cancelled() => return,
            end = serve(client, &node_id, &connections) => end,
        };
        if opened.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        let reason = match end {
            // A control-plane node without the service (an older version):
            // no connections API through it, and nothing to warn about often.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                backoff = BACKOFF_MAX;
                None
            }
            Err(s) => Some(s.message().to_string()),
            Ok(()) => Some("closed by the control plane".to_string()),
        };
        let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        tokio::select! {
            // Usually Watch ended too, and says so itself.
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match reason {
            Some(reason) => tracing::warn!(%reason, "connections stream ended; reopening"),
            None => tracing::debug!("the control-plane node has no Connections service"),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream: hello, then a task per command. Returns when it ends.
async fn serve(
    mut client: ConnectionsClient<
        tonic::service::interceptor::InterceptedService<Channel, BearerToken>,
    >,
    node_id: &str,
    connections: &Arc<Connections>,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    let hello = ConnectionsUp {
        msg: Some(connections_up::Msg::Hello(ConnectionsHello {
            node_id: node_id.to_string(),
        })),
    };
    tx.send(hello).await.expect("receiver is alive");
    let mut inbound = client.open(ReceiverStream::new(rx)).await?.into_inner();
    tracing::debug!("connections stream open");
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(cmd) = inbound.next().await.transpose()? {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (tx, connections) = (tx.clone(), connections.clone());
        tokio::spawn(async move {
            let reply = tokio::time::timeout(COMMAND_TIMEOUT, answer(&connections, cmd)).await;
            if let Ok(reply) = reply {
                let up = ConnectionsUp {
                    msg: Some(connections_up::Msg::Reply(reply)),
                };
                // The stream may have ended meanwhile: no one to tell.
                let _ = tx.send(up).await;
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Run one command against the registry.
pub(crate) async fn answer(connections: &Connections, cmd: ConnectionCommand) -> ConnectionReply {
    let id = cmd.connection_id.as_str();
    let (outcome, info_json) = match cmd.op() {
        ConnectionOp::Push => (
            outcome(connections.push(id, Bytes::from(cmd.body)).await),
            Vec::new(),
        ),
        ConnectionOp::Close => (outcome(connections.close(id).await), Vec::new()),
        ConnectionOp::Get => match connections.info(id) {
            Some(info) => match serde_json::to_vec(&info) {
                Ok(json) => (ConnectionOutcome::Done, json),
                Err(_) => (ConnectionOutcome::Unspecified, Vec::new()),
            },
            None => (ConnectionOutcome::Gone, Vec::new()),
        },
        // A command this version does not know: the control plane answers 500.
        ConnectionOp::Unspecified => (ConnectionOutcome::Unspecified, Vec::new()),
    };
    ConnectionReply {
        request_id: cmd.request_id,
        outcome: outcome as i32,
        info_json,
        reconnecting: false,
    }
}

fn outcome(d: Delivery) -> ConnectionOutcome {
    match d {
        Delivery::Done => ConnectionOutcome::Done,
        Delivery::Gone => ConnectionOutcome::Gone,
        Delivery::TooManyRequests => ConnectionOutcome::TooManyRequests,
        Delivery::LimitExceeded => ConnectionOutcome::LimitExceeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(op: ConnectionOp, id: &str) -> ConnectionCommand {
        ConnectionCommand {
            request_id: 7,
            op: op as i32,
            connection_id: id.to_string(),
            body: b"hi".to_vec(),
        }
    }

    #[tokio::test]
    async fn commands_for_connections_not_open_here_are_gone() {
        let connections = Connections::default();
        let id = tollgate_model::connection_id::new_id("dp-1");
        for op in [ConnectionOp::Push, ConnectionOp::Get, ConnectionOp::Close] {
            let r = answer(&connections, command(op, &id)).await;
            assert_eq!(
                (r.request_id, r.outcome()),
                (7, ConnectionOutcome::Gone),
                "{op:?}"
            );
            assert!(r.info_json.is_empty());
        }
        let r = answer(&connections, command(ConnectionOp::Unspecified, &id)).await;
        assert_eq!(r.outcome(), ConnectionOutcome::Unspecified);
    }

    #[test]
    fn every_delivery_has_its_outcome() {
        assert_eq!(outcome(Delivery::Done), ConnectionOutcome::Done);
        assert_eq!(outcome(Delivery::Gone), ConnectionOutcome::Gone);
        assert_eq!(
            outcome(Delivery::TooManyRequests),
            ConnectionOutcome::TooManyRequests
        );
        assert_eq!(
            outcome(Delivery::LimitExceeded),
            ConnectionOutcome::LimitExceeded
        );
    }
}
