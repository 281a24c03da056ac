//! One WebSocket connection from its upgrade to its close.
//!
//! A session is one task that owns the socket: it reads the client's
//! messages, writes what is to be sent (route responses, connections-API
//! pushes, the gateway's error messages) and watches the timers and the
//! shutdown signal. Integration calls run in tasks of their own, at most
//! `IN_FLIGHT` per connection (reading pauses beyond that), so a slow
//! integration delays neither pings nor pushes. Each message, in either
//! direction, takes a unit of the key's throttle and quota and is metered
//! (`PlanEnforcer::admit_message`); gateway error messages are not.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::HeaderMap;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tollgate_model::docs::{Route, Throttle, UsagePlan};
use tollgate_model::websocket::{self as ws_model, WebSocketSettings};

use super::integration::{self, Call, Caller, Event};
use super::metrics::ApiCounters;
use super::{Command, Delivery, Handle};
use crate::gateway::Gateway;
use crate::plans::PlanDenied;
use crate::router::CompiledApi;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Integration calls under way per connection before reading pauses.
const IN_FLIGHT: usize = 32;
/// How long `$disconnect` may take before the session ends without it.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

/// The key and plan a connection's messages are metered under.
#[derive(Clone)]
pub struct Metering {
    pub key: String,
    pub plan: Arc<UsagePlan>,
    /// The stage's throttle, for a plan that sets none.
    pub stage_throttle: Option<Throttle>,
}

impl Metering {
    fn throttle(&self) -> Option<&Throttle> {
        self.plan.throttle.as_ref().or(self.stage_throttle.as_ref())
    }
}

/// What a session needs, made at the upgrade.
pub struct Opening {
    pub gw: Arc<Gateway>,
    /// The API as compiled when the connection opened; the session
    /// follows its route-table key to the one in force.
    pub api: Arc<CompiledApi>,
    pub caller: Arc<Caller>,
    pub metering: Option<Metering>,
    pub handle: Arc<Handle>,
    pub commands: mpsc::Receiver<Command>,
}

/// Why a session ends: the close code and reason, and whether the gateway
/// still sends a close frame.
struct Ending {
    code: u16,
    reason: &'static str,
    /// The client closed, or the socket failed: nothing more to write.
    by_peer: bool,
    /// `$disconnect` before the close frame (shutdown), else after.
    disconnect_first: bool,
    /// The connections API's `DELETE`, answered once it is all done.
    reply: Option<oneshot::Sender<Delivery>>,
}

impl Ending {
    fn gateway(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason,
            by_peer: false,
            disconnect_first: false,
            reply: None,
        }
    }
}

struct Session {
    gw: Arc<Gateway>,
    api: Arc<CompiledApi>,
    caller: Arc<Caller>,
    metering: Option<Metering>,
    handle: Arc<Handle>,
    counters: Arc<ApiCounters>,
    settings: WebSocketSettings,
    sink: SplitSink<Socket, Message>,
    /// Messages for the client from integration tasks, already admitted.
    outbox: mpsc::Sender<Message>,
    in_flight: Arc<Semaphore>,
    idle_until: tokio::time::Instant,
    opened: Instant,
    /// The reason in the client's close frame, for `$disconnect`.
    peer_reason: String,
}

/// Run the session once the client's connection has switched protocols.
pub async fn run(o: Opening, upgrade: hyper::upgrade::OnUpgrade) {
    let id = o.handle.info.id.clone();
    let registry = o.gw.connections.clone();
    let counters = o.gw.connections.metrics.api(&o.api.doc.id);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let Ok(upgraded) = upgrade.await else {
        registry.remove(&id);
        counters.closed(1006);
        return;
    };
    let settings = o.api.doc.websocket.unwrap_or_default();
    let config = WebSocketConfig::default()
        // Eagerly allocated per connection: kept small so that idle
        // connections cost little; a message grows it as it needs.
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes as usize))
        .max_frame_size(Some(settings.max_frame_bytes as usize));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let (outbox, outgoing) = mpsc::channel(IN_FLIGHT);
    let mut s = Session {
        idle_until: idle_deadline(&settings),
        gw: o.gw,
        api: o.api,
        caller: o.caller,
        metering: o.metering,
        handle: o.handle,
        counters,
        settings,
        sink,
        outbox,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        opened: Instant::now(),
        peer_reason: String::new(),
    };
    let ending = s.serve(stream, o.commands, outgoing).await;
    s.end(ending).await;
    registry.remove(&id);
}

fn idle_deadline(settings: &WebSocketSettings) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(settings.idle_timeout_s)
}

impl Session {
    async fn serve(
        &mut self,
        mut stream: SplitStream<Socket>,
        mut commands: mpsc::Receiver<Command>,
        mut outgoing: mpsc::Receiver<Message>,
    ) -> Ending {
        let last_call =
            tokio::time::Instant::now() + Duration::from_secs(self.settings.max_duration_s);
        let shutdown = self.gw.connections.closing.clone();
        loop {
            let idle = tokio::time::sleep_until(self.idle_until);
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(m)) => {
                        if let Some(end) = self.on_frame(m).await {
                            return end;
                        }
                    }
                    Some(Err(e)) => return read_error(&e),
                    None => return Ending { by_peer: true, ..Ending::gateway(1006, "") },
                },
                Some(m) = outgoing.recv() => {
                    if self.write(m).await.is_err() {
                        return Ending { by_peer: true, ..Ending::gateway(1006, "") };
                    }
                }
                Some(c) = commands.recv() => {
                    if let Some(end) = self.on_command(c).await {
                        return end;
                    }
                }
                () = idle => return Ending::gateway(1001, "idle timeout"),
                () = tokio::time::sleep_until(last_call) => {
                    return Ending::gateway(1001, "maximum connection duration");
                }
                () = shutdown.cancelled() => {
                    return Ending {
                        disconnect_first: true,
                        ..Ending::gateway(1001, "going away")
                    };
                }
            }
        }
    }

    fn touch(&mut self) {
        self.idle_until = idle_deadline(&self.settings);
        self.handle
            .last_active_ms
            .store(crate::civil_time::now_ms(), Ordering::Relaxed);
    }

    async fn write(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.touch();
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        self.sink.send(m).await
    }

    /// A frame from the client; `Some` when it ends the session.
    async fn on_frame(&mut self, m: Message) -> Option<Ending> {
        match m {
            Message::Text(t) => self.on_message(Bytes::from(t), true).await,
            Message::Binary(b) => self.on_message(b, false).await,
            // Pongs are answered by the socket as it reads.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                self.touch();
                None
            }
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_string())
                });
                // The reply to the client's close goes with the next flush.
                let _ = self.sink.flush().await;
                self.peer_reason = reason;
                Some(Ending {
                    by_peer: true,
                    ..Ending::gateway(code, "")
                })
            }
        }
    }

    async fn on_command(&mut self, c: Command) -> Option<Ending> {
        match c {
            Command::Push(body, reply) => {
                let arrived = Instant::now();
                let outcome = self.admit(body.len()).await;
                if outcome == Delivery::Done {
                    if self.write(message_of(body)).await.is_err() {
                        let _ = reply.send(Delivery::Gone);
                        return Some(Ending {
                            by_peer: true,
                            ..Ending::gateway(1006, "")
                        });
                    }
                    let us = arrived.elapsed().as_micros() as u64;
                    self.counters.push_latency.observe_us(us);
                }
                let _ = reply.send(outcome);
                None
            }
            Command::Close(reply) => Some(Ending {
                reply: Some(reply),
                ..Ending::gateway(1000, "closed by the connections API")
            }),
            Command::GoAway(reason) => Some(Ending::gateway(1001, reason)),
        }
    }

    /// A unit of the key's throttle and quota for a message of `bytes`.
    async fn admit(&self, bytes: usize) -> Delivery {
        let (Some(m), Some(plans)) = (&self.metering, self.gw.plans()) else {
            return Delivery::Done;
        };
        let units = ws_model::message_units(bytes);
        match plans
            .admit_message(&m.key, &m.plan, m.throttle(), units)
            .await
        {
            Ok(_) => Delivery::Done,
            Err(PlanDenied::Throttled { .. }) => Delivery::TooManyRequests,
            Err(_) => Delivery::LimitExceeded,
        }
    }

    /// A message from the client: admitted, then routed.
    async fn on_message(&mut self, body: Bytes, text: bool) -> Option<Ending> {
        self.touch();
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        let refusal = match self.admit(body.len()).await {
            Delivery::Done => None,
            Delivery::TooManyRequests => Some("Too Many Requests"),
            _ => Some("Limit Exceeded"),
        };
        if let Some(message) = refusal {
            return self.notice(message).await;
        }
        let api = self.api_in_force();
        let Some(route) = select_route(&api, &body, text) else {
            return self.notice("Forbidden").await;
        };
        let route = route.clone();
        if let Some(mock) = &route.mock {
            if mock.body.is_empty() {
                return None;
            }
            let answer = Bytes::from(mock.body.clone().into_bytes());
            return self.respond(answer).await;
        }
        self.dispatch(api, route, body, text).await;
        None
    }

    /// The API in force under this connection's route-table key (config
    /// changes reach open connections), else the one it opened on.
    fn api_in_force(&self) -> Arc<CompiledApi> {
        self.gw
            .snapshot()
            .routes
            .api(&self.api.key)
            .cloned()
            .unwrap_or_else(|| self.api.clone())
    }

    /// A route response: admitted as a message, then written.
    async fn respond(&mut self, body: Bytes) -> Option<Ending> {
        match self.admit(body.len()).await {
            Delivery::Done => self.write(message_of(body)).await.err().map(|_| Ending {
                by_peer: true,
                ..Ending::gateway(1006, "")
            }),
            Delivery::TooManyRequests => self.notice("Too Many Requests").await,
            _ => self.notice("Limit Exceeded").await,
        }
    }

    /// A gateway error message (not metered).
    async fn notice(&mut self, message: &str) -> Option<Ending> {
        let m = notice(message, &self.handle.info.id);
        self.write(m).await.err().map(|_| Ending {
            by_peer: true,
            ..Ending::gateway(1006, "")
        })
    }

    /// Call the route's integration in a task of its own; its answer
    /// comes back through the outbox.
    async fn dispatch(&mut self, api: Arc<CompiledApi>, route: Route, body: Bytes, text: bool) {
        let Some(pool) = api.upstream.clone() else {
            self.notice("Internal server error").await;
            return;
        };
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let gw = self.gw.clone();
        let caller = self.caller.clone();
        let metering = self.metering.clone();
        let outbox = self.outbox.clone();
        let id = self.handle.info.id.clone();
        let max = self.settings.max_message_bytes as usize;
        tokio::spawn(async move {
            let _permit = permit;
            let mut fields = HeaderMap::new();
            fields.insert(header::CONTENT_TYPE, content_type(&body, text));
            let call = Call {
                event: Event::Message,
                route_key: route.key.as_deref().unwrap_or(ws_model::DEFAULT),
                path: &route.path,
                query: "",
                body,
                fields,
            };
            let reply = integration::post(&gw.clients, &pool, &caller, call, max).await;
            let answer = match reply {
                Ok(r) if r.status.is_success() && route.response && !r.body.is_empty() => {
                    let admitted = admit_outgoing(&gw, metering.as_ref(), r.body.len()).await;
                    admitted.map_or_else(|m| notice(m, &id), |()| message_of(r.body))
                }
                Ok(r) if !r.status.is_server_error() => return,
                Ok(r) => {
                    tracing::debug!(status = %r.status, "websocket integration failed");
                    notice("Internal server error", &id)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "websocket integration failed");
                    notice("Internal server error", &id)
                }
            };
            let _ = outbox.send(answer).await;
        });
    }

    /// Close the connection and run `$disconnect`, in the order the
    /// ending asks for; then charge the connection's minutes.
    async fn end(&mut self, mut ending: Ending) {
        if ending.disconnect_first {
            self.disconnect(&ending).await;
        }
        if !ending.by_peer {
            let frame = CloseFrame {
                code: CloseCode::from(ending.code),
                reason: ending.reason.into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.sink.send(Message::Close(Some(frame))),
            )
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
        }
        if !ending.disconnect_first {
            self.disconnect(&ending).await;
        }
        self.counters.closed(ending.code);
        if let (Some(m), Some(plans)) = (&self.metering, self.gw.plans()) {
            let minutes = self.opened.elapsed().as_secs().div_ceil(60).max(1);
            plans.meter_connection_minutes(&m.key, &m.plan.id, minutes);
        }
        let duration_ms = self.opened.elapsed().as_millis() as u64;
        super::log_event(
            self.gw.access_log(),
            &self.handle.info,
            Some((ending.code, duration_ms)),
        );
        if let Some(reply) = ending.reply.take() {
            let _ = reply.send(Delivery::Done);
        }
    }

    /// The `$disconnect` route, if the API has one, with the close code
    /// and reason; bounded, so a stalled integration cannot hold the end.
    async fn disconnect(&self, ending: &Ending) {
        let api = self.api_in_force();
        let Some(route) = api
            .routes
            .iter()
            .find(|r| r.doc.key.as_deref() == Some(ws_model::DISCONNECT))
        else {
            return;
        };
        let (Some(pool), None) = (&api.upstream, &route.doc.mock) else {
            return;
        };
        let mut fields = HeaderMap::new();
        fields.insert(
            integration::X_CLOSE_CODE.clone(),
            HeaderValue::from(ending.code),
        );
        let reason = if ending.by_peer {
            self.peer_reason.as_str()
        } else {
            ending.reason
        };
        if let Some(v) = HeaderValue::from_str(reason)
            .ok()
            .filter(|_| !reason.is_empty())
        {
            fields.insert(integration::X_CLOSE_REASON.clone(), v);
        }
        let call = Call {
            event: Event::Disconnect,
            route_key: ws_model::DISCONNECT,
            path: &route.doc.path,
            query: "",
            body: Bytes::new(),
            fields,
        };
        let calling = integration::post(&self.gw.clients, pool, &self.caller, call, 64 * 1024);
        if let Ok(Err(e)) = tokio::time::timeout(DISCONNECT_WAIT, calling).await {
            tracing::debug!(error = %e, "$disconnect failed");
        }
    }
}

/// The route a message goes to: the one whose key the selection field
/// names, else `$default`. Binary messages and messages that are not JSON
/// go to `$default`.
fn select_route<'a>(api: &'a CompiledApi, body: &[u8], text: bool) -> Option<&'a Route> {
    let by_key = |key: &str| {
        api.routes
            .iter()
            .map(|r| &r.doc)
            .find(|r| r.key.as_deref() == Some(key))
    };
    let selected = text
        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
        .flatten()
        .and_then(|json| {
            let expression = api
                .doc
                .route_selection
                .as_deref()
                .unwrap_or(ws_model::DEFAULT_ROUTE_SELECTION);
            let path = ws_model::selection_path("route_selection", expression).ok()?;
            let key = ws_model::selected_key(&path, &json)?.to_string();
            // `$connect` and `$disconnect` are the gateway's to run.
            (!key.starts_with('$')).then_some(key)
        });
    selected
        .and_then(|k| by_key(&k))
        .or_else(|| by_key(ws_model::DEFAULT))
}

/// A unit of the key's throttle and quota for an outgoing message, from a
/// task that has no session at hand; `Err` is the client's notice.
async fn admit_outgoing(
    gw: &Gateway,
    metering: Option<&Metering>,
    bytes: usize,
) -> Result<(), &'static str> {
    let (Some(m), Some(plans)) = (metering, gw.plans()) else {
        return Ok(());
    };
    let units = ws_model::message_units(bytes);
    match plans
        .admit_message(&m.key, &m.plan, m.throttle(), units)
        .await
    {
        Ok(_) => Ok(()),
        Err(PlanDenied::Throttled { .. }) => Err("Too Many Requests"),
        Err(_) => Err("Limit Exceeded"),
    }
}

/// Text if the bytes are UTF-8, else binary.
fn message_of(body: Bytes) -> Message {
    match tungstenite::Utf8Bytes::try_from(body.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(body),
    }
}

/// A gateway error message: `{"message": …, "connectionId": …}`.
fn notice(message: &str, connection_id: &str) -> Message {
    Message::text(
        serde_json::json!({ "message": message, "connectionId": connection_id }).to_string(),
    )
}

fn content_type(body: &[u8], text: bool) -> HeaderValue {
    HeaderValue::from_static(match text {
        true if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => "application/json",
        true => "text/plain; charset=utf-8",
        false => "application/octet-stream",
    })
}

/// How a read error ends the session: 1009 for a frame or message over
/// the limits, 1007 for a text message that is not UTF-8, 1002 for other
/// protocol errors; a broken socket gets no close frame.
fn read_error(e: &tungstenite::Error) -> Ending {
    use tungstenite::Error as E;
    match e {
        E::Capacity(_) => Ending::gateway(1009, "message too big"),
        E::Utf8 => Ending::gateway(1007, "invalid UTF-8 in a text message"),
        E::Protocol(_) => Ending::gateway(1002, "protocol error"),
        _ => Ending {
            by_peer: true,
            ..Ending::gateway(1006, "")
        },
    }
}
