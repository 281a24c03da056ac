//! The typed admin gRPC API (`TypedAdmin`) and server reflection: a round
//! trip through reflection-discovered descriptors, as a client without the
//! repo makes it; the typed messages kept in step with the JSON documents;
//! bad typed input refused naming the field, as REST refuses it.

use crate::common;

use std::collections::BTreeMap;
use std::str::FromStr;

use common::*;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use serde_json::{json, Value};
use tollgate_control_plane::service::{IssuedKey, KeyView};
use tollgate_model::docs as m;
use tollgate_model::stages::{Canary, Stage, Sticky};
use tollgate_model::websocket::{Protocol, WebSocketSettings};
use tollgate_proto as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

// ------------------------------------------------------------ a generic client

/// Encodes and decodes `DynamicMessage`s of the method's descriptors.
struct DynCodec(MessageDescriptor);

struct DynEncoder;
struct DynDecoder(MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;
    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }
    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.0.clone())
    }
}

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A client that knows only what reflection told it.
struct Discovered {
    channel: Channel,
    pool: DescriptorPool,
    token: Option<String>,
}

impl Discovered {
    /// Lists the services, then fetches the files that define `service`.
    async fn connect(channel: Channel, service: &str) -> (Self, Vec<String>) {
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let ask = |r: MessageRequest| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r),
        };
        let requests = vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(service.into())),
        ];
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection answers without a token")
            .into_inner();
        let mut services = Vec::new();
        let mut pool = DescriptorPool::new();
        while let Some(answer) = answers.message().await.unwrap() {
            match answer.message_response.unwrap() {
                MessageResponse::ListServicesResponse(l) => {
                    services.extend(l.service.into_iter().map(|s| s.name));
                }
                MessageResponse::FileDescriptorResponse(f) => {
                    for file in f.file_descriptor_proto {
                        pool.decode_file_descriptor_proto(file.as_slice()).unwrap();
                    }
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        let client = Self {
            channel,
            pool,
            token: Some(ADMIN_TOKEN.into()),
        };
        (client, services)
    }

    fn method(&self, service: &str, name: &str) -> MethodDescriptor {
        let s = self.pool.get_service_by_name(service).expect("service");
        let found = s.methods().find(|m| m.name() == name);
        found.unwrap_or_else(|| panic!("{service} has no method {name}"))
    }

    /// Calls `TypedAdmin.{name}` with a request written as proto3 JSON, and
    /// answers in proto3 JSON with the proto's field names.
    async fn call(&self, name: &str, request: Value) -> Result<Value, Status> {
        let method = self.method("tollgate.v1.TypedAdmin", name);
        let message = DynamicMessage::deserialize(method.input(), request).unwrap();
        let mut req = Request::new(message);
        if let Some(t) = &self.token {
            let auth = format!("Bearer {t}").parse().unwrap();
            req.metadata_mut().insert("authorization", auth);
        }
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_str(&path).unwrap();
        let answer = grpc.unary(req, path, DynCodec(method.output())).await?;
        let options = SerializeOptions::new().use_proto_field_name(true);
        let json = answer
            .into_inner()
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap();
        Ok(json)
    }
}

/// proto3 JSON writes 64-bit integers as strings.
fn uint(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).expect("a uint64")
}

// ------------------------------------------------------------ (a) round trip

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_round_trip_through_reflection() {
    init_tracing();
    let c = Cluster::start(1).await;
    let node = &c.nodes[0];
    let (client, services) =
        Discovered::connect(node.grpc_channel().await, "tollgate.v1.TypedAdmin").await;
    for s in ["tollgate.v1.TypedAdmin", "tollgate.v1.Admin"] {
        assert!(services.iter().any(|n| n == s), "{s} in {services:?}");
    }
    assert_v1alpha_lists(node.grpc_channel().await).await;

    let api = json!({"id": "typed", "base_path": "/typed", "protocol": "PROTOCOL_HTTP",
        "auth": {"api_key": true},
        "upstream": {"targets": [{"url": "http://127.0.0.1:9"}], "timeout_ms": "5000"},
        "routes": [{"id": "all", "path": "/{rest+}"},
                   {"id": "ping", "path": "/ping", "mock": {"body": "pong"}}]});
    let put = client.call("PutApi", api).await.unwrap();
    assert!(uint(&put["revision"]) > 0, "{put}");

    // The typed answer is the document REST shows, defaults filled in alike.
    let got = client.call("GetApi", json!({"id": "typed"})).await.unwrap();
    assert_eq!(got["upstream"]["retries"], 1, "{got}");
    assert_eq!(got["routes"][1]["mock"]["status"], 200, "{got}");
    let method = client.method("tollgate.v1.TypedAdmin", "GetApi");
    let typed: pb::Api = DynamicMessage::deserialize(method.output(), got.clone())
        .unwrap()
        .transcode_to()
        .unwrap();
    let (s, mut rest) = node.client().get("/v1/apis/typed").await;
    assert_eq!(s, 200, "{rest}");
    assert_eq!(uint(&got["revision"]), rest["revision"].as_u64().unwrap());
    rest.as_object_mut().unwrap().remove("revision");
    let rest: m::Api = serde_json::from_value(rest).unwrap();
    assert_eq!(m::Api::try_from(typed).unwrap(), rest);

    let list = client.call("ListApis", json!({})).await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], "typed");

    issue_key_round_trip(&client, node.grpc_url()).await;

    let del = client
        .call("DeleteApi", json!({"id": "typed"}))
        .await
        .unwrap();
    assert!(uint(&del["revision"]) > uint(&put["revision"]));
    let gone = client.call("GetApi", json!({"id": "typed"})).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);

    // Reflection is open; the documents are not.
    let anonymous = Discovered {
        token: None,
        ..client
    };
    let refused = anonymous.call("ListApis", json!({})).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

/// Older grpcurl releases ask reflection's v1alpha only.
async fn assert_v1alpha_lists(channel: Channel) {
    use tonic_reflection::pb::v1alpha as alpha;
    let ask = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let text = format!("{answer:?}");
    assert!(text.contains("tollgate.v1.TypedAdmin"), "{text}");
}

/// Tenant and plan put typed, then a key issued, used on a data plane,
/// read, listed and revoked.
async fn issue_key_round_trip(client: &Discovered, grpc_url: String) {
    let tenant = json!({"id": "acme", "name": "Acme"});
    client.call("PutTenant", tenant).await.unwrap();
    let plan = json!({"id": "gold", "apis": ["typed"],
        "quota": {"limit": "1000", "period": "QUOTA_PERIOD_DAY"}});
    client.call("PutUsagePlan", plan).await.unwrap();
    let req = json!({"tenant": "acme", "name": "ci", "plans": ["gold"]});
    let issued = client.call("IssueKey", req).await.unwrap();
    let id = issued["id"].as_str().unwrap();
    let value = issued["value"].as_str().unwrap();
    assert!(
        value.starts_with(issued["prefix"].as_str().unwrap()),
        "{issued}"
    );
    assert_eq!(issued["plans"], json!(["gold"]));
    let dp = common::dp::start_dp(vec![grpc_url], None).await;
    common::dp::wait_for_revision(&dp, uint(&issued["revision"])).await;
    let ping = format!("http://{}/typed/ping", dp.proxy_addr);
    let http = common::dp::http();
    let with_key = http.get(&ping).header("x-api-key", value).send().await;
    assert_eq!(with_key.unwrap().text().await.unwrap(), "pong");
    let without = http.get(&ping).send().await.unwrap();
    assert_eq!(without.status(), 403, "no key: forbidden, as AWS answers");
    dp.shutdown().await;

    let got = client.call("GetApiKey", json!({"id": id})).await.unwrap();
    assert_eq!(got["enabled"], true, "{got}");
    assert!(
        got.get("value").is_none() && got.get("hash").is_none(),
        "{got}"
    );
    let list = client.call("ListApiKeys", json!({})).await.unwrap();
    assert_eq!(list["items"][0]["id"], id, "{list}");
    client
        .call("DeleteApiKey", json!({"id": id}))
        .await
        .unwrap();
    let gone = client.call("GetApiKey", json!({"id": id})).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    for (rpc, id) in [("DeleteUsagePlan", "gold"), ("DeleteTenant", "acme")] {
        client.call(rpc, json!({"id": id})).await.unwrap();
    }
}

// ------------------------------------------------------------ (c) bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_typed_input_names_the_field_as_rest_does() {
    use pb::typed_admin_client::TypedAdminClient;
    init_tracing();
    let c = Cluster::start(1).await;
    let node = &c.nodes[0];
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
    let mut typed =
        TypedAdminClient::with_interceptor(node.grpc_channel().await, move |mut r: Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        });
    let route = |id: &str, status| pb::Route {
        id: id.into(),
        path: format!("/{id}"),
        mock: Some(pb::Mock {
            status,
            ..Default::default()
        }),
        ..Default::default()
    };
    let api = |base_path: &str, routes| pb::Api {
        id: "bad".into(),
        base_path: base_path.into(),
        routes,
        ..Default::default()
    };
    // The document's own checks answer in the same words as through REST.
    for (doc, field) in [
        (api("no-slash", vec![]), "base_path"),
        (
            api("/bad", vec![route("a", Some(99))]),
            "routes[0].mock.status",
        ),
    ] {
        let err = typed.put_api(doc.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(&format!("{field}:")), "{err:?}");
        let body = tollgate_proto::typed::ToDocument::to_document(doc).unwrap();
        let (s, v) = node.client().put("/v1/apis/bad", body).await;
        assert_eq!((s, &v["error"]["message"]), (400, &json!(err.message())));
    }
    // What only the wire can get wrong is named the same way.
    for (doc, field) in [
        (
            api("/bad", vec![route("a", None), route("b", Some(70_000))]),
            "routes[1].mock.status",
        ),
        (
            pb::Api {
                protocol: 7,
                ..api("/bad", vec![])
            },
            "protocol",
        ),
    ] {
        let err = typed.put_api(doc).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(&format!("{field}:")), "{err:?}");
    }
    let plan = pb::UsagePlan {
        id: "p".into(),
        quota: Some(pb::Quota {
            limit: 5,
            period: 0,
        }),
        ..Default::default()
    };
    let err = typed.put_usage_plan(plan).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("quota:"), "{err:?}");
    let key = pb::IssueKeyRequest {
        tenant: "Not An Id".into(),
        ..Default::default()
    };
    let err = typed.issue_key(key).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("tenant:"), "{err:?}");
}

// ------------------------------------------------------------ (b) in step

/// Every field of the JSON document is a field of the same name in the
/// message, recursively; and every message field (but `revision`, which
/// reads add) is in the example, so the example covers the message.
fn in_step(json: &Value, msg: &MessageDescriptor, at: &str, errors: &mut Vec<String>) {
    let obj = json.as_object().expect("a JSON object");
    for (name, v) in obj {
        let Some(field) = msg.get_field_by_name(name) else {
            errors.push(format!("{at}.{name}: not in {}", msg.full_name()));
            continue;
        };
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        if field.is_map() {
            continue;
        }
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    in_step(item, &inner, &format!("{at}.{name}[{i}]"), errors);
                }
            }
            one => in_step(one, &inner, &format!("{at}.{name}"), errors),
        }
    }
    for f in msg.fields() {
        if !obj.contains_key(f.name()) && !["revision", "idempotency_key"].contains(&f.name()) {
            errors.push(format!("{at}.{}: not in the example", f.name()));
        }
    }
}

#[test]
fn typed_messages_keep_in_step_with_the_json_documents() {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let examples: [(&str, Value); 8] = [
        ("Api", json(maximal_api())),
        ("Authorizer", json(maximal_authorizer())),
        ("Tenant", json(tenant())),
        ("UsagePlan", json(usage_plan())),
        ("Stage", json(stage())),
        ("ApiKey", json(key_view())),
        ("IssuedKey", json(issued_key())),
        ("IssueKeyRequest", issue_key_request()),
    ];
    let mut errors = Vec::new();
    for (name, doc) in &examples {
        let msg = pool
            .get_message_by_name(&format!("tollgate.v1.{name}"))
            .unwrap();
        in_step(doc, &msg, name, &mut errors);
    }
    // The check itself: a field the proto lacks is found, however deep.
    let mut api = json(maximal_api());
    api["routes"][0]["mock"]["brand_new"] = json!(1);
    let mut found = Vec::new();
    let msg = pool.get_message_by_name("tollgate.v1.Api").unwrap();
    in_step(&api, &msg, "Api", &mut found);
    assert_eq!(
        found,
        ["Api.routes[0].mock.brand_new: not in tollgate.v1.Mock"]
    );
    assert!(
        errors.is_empty(),
        "the proto lags the model:\n{}",
        errors.join("\n")
    );
}

/// Model → message → model changes nothing, so no field is dropped on
/// either way.
#[test]
fn documents_survive_the_typed_form() {
    let api = maximal_api();
    assert_eq!(m::Api::try_from(pb::Api::from(&api)).unwrap(), api);
    let authorizer = maximal_authorizer();
    let back = m::Authorizer::try_from(pb::Authorizer::from(&authorizer)).unwrap();
    assert_eq!(back, authorizer);
    assert_eq!(
        m::Tenant::try_from(pb::Tenant::from(&tenant())).unwrap(),
        tenant()
    );
    let plan = usage_plan();
    assert_eq!(
        m::UsagePlan::try_from(pb::UsagePlan::from(&plan)).unwrap(),
        plan
    );
    assert_eq!(Stage::try_from(pb::Stage::from(&stage())).unwrap(), stage());
}

fn json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

// Maximal examples: every field set off its default, so it is serialized.
// Written as struct literals, so a field added to the model stops this
// file compiling until the example (and then the proto) has it.

fn mock(body: &str) -> m::Mock {
    m::Mock {
        status: 503,
        body: body.into(),
        headers: BTreeMap::from([("content-type".into(), "text/plain".into())]),
    }
}

fn maximal_api() -> m::Api {
    m::Api {
        id: "orders".into(),
        protocol: Protocol::Websocket,
        base_path: "/orders".into(),
        hosts: vec!["api.example.com".into()],
        upstream: Some(upstream()),
        auth: m::AuthPolicy {
            api_key: true,
            authorizer: Some("jwt".into()),
            scopes: vec!["orders:read".into()],
        },
        cors: Some(m::Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-b".into()],
            allow_credentials: true,
            max_age_s: Some(600),
        }),
        ip_allow: vec!["10.0.0.0/8".into()],
        ip_deny: vec!["10.1.0.0/16".into()],
        routes: vec![maximal_route()],
        allow_underscore_headers: true,
        fallback: Some(mock("down")),
        route_selection: Some("$request.body.op".into()),
        websocket: Some(WebSocketSettings {
            idle_timeout_s: 60,
            max_duration_s: 600,
            max_message_bytes: 1024,
            max_frame_bytes: 512,
        }),
    }
}

fn upstream() -> m::Upstream {
    m::Upstream {
        targets: vec![m::Target {
            url: "http://10.0.0.9:8000".into(),
            weight: 3,
        }],
        load_balancing: m::LoadBalancing::LeastRequest,
        timeout_ms: 1000,
        retries: 2,
        health_check: Some(m::HealthCheck {
            path: "/healthz".into(),
            interval_ms: 1000,
            unhealthy_threshold: 3,
            healthy_threshold: 4,
        }),
        circuit_breaker_failures: 7,
        idle_timeout_ms: 9000,
    }
}

fn maximal_route() -> m::Route {
    m::Route {
        id: "send".into(),
        methods: vec!["POST".into()],
        path: "/messages".into(),
        key: Some("sendmessage".into()),
        response: true,
        upstream_path: Some("/v2/messages".into()),
        cache: Some(m::CacheConfig {
            ttl_s: 30,
            key: vec!["query:q".into()],
            shared: true,
            allow_client_invalidation: true,
            stale_if_error_s: 60,
        }),
        auth: Some(m::AuthPolicy {
            api_key: true,
            authorizer: Some("custom".into()),
            scopes: vec!["write".into()],
        }),
        mock: Some(mock("{}")),
        fallback: Some(mock("later")),
        function: Some(m::Function {
            url: "http://lambda:9001".into(),
            name: "orders-fn".into(),
            payload: "1.0".into(),
            timeout_ms: 3000,
            sigv4: Some(m::SigV4 {
                region: "us-east-1".into(),
                access_key_id_env: "AK".into(),
                secret_access_key_env: "SK".into(),
                session_token_env: Some("ST".into()),
            }),
        }),
    }
}

fn maximal_authorizer() -> m::Authorizer {
    m::Authorizer {
        id: "custom".into(),
        kind: m::AuthorizerType::Request,
        issuer: "https://issuer.example".into(),
        audiences: vec!["orders".into()],
        jwks_uri: Some("https://issuer.example/jwks".into()),
        jwks: Some(json!({"keys": [{"kty": "oct", "k": null}]})),
        secret: Some("s3cret".into()),
        algorithms: vec!["HS256".into()],
        claims_to_headers: BTreeMap::from([("sub".into(), "x-sub".into())]),
        forward_authorization: true,
        endpoint: Some("http://authz:9000/authorize".into()),
        identity_sources: vec!["header:authorization".into()],
        ttl_s: Some(0),
        timeout_ms: Some(1500),
        response: m::AuthorizerResponse::Policy,
    }
}

fn tenant() -> m::Tenant {
    m::Tenant {
        id: "acme".into(),
        name: "Acme".into(),
    }
}

fn usage_plan() -> m::UsagePlan {
    m::UsagePlan {
        id: "gold".into(),
        apis: vec!["orders".into()],
        throttle: Some(m::Throttle {
            rate: 12.5,
            burst: 20,
        }),
        quota: Some(m::Quota {
            limit: 1000,
            period: m::QuotaPeriod::Week,
        }),
        price: Some(tollgate_model::billing::Price {
            currency: "EUR".into(),
            monthly_fee: "10".into(),
            per_million_requests: "3.50".into(),
            per_million_messages: "1.00".into(),
            per_million_connection_minutes: "0.25".into(),
        }),
    }
}

fn stage() -> Stage {
    Stage {
        id: "orders-prod".into(),
        api: "orders".into(),
        deployment: "dep-3".into(),
        base_path: "/prod/orders".into(),
        hosts: vec!["prod.example.com".into()],
        variables: BTreeMap::from([("backend".into(), "http://10.0.0.7".into())]),
        canary: Some(Canary {
            deployment: "dep-4".into(),
            percent: 10.0,
            variables: BTreeMap::from([("backend".into(), "http://10.0.0.8".into())]),
            sticky: Sticky::Key,
        }),
        throttle: Some(m::Throttle {
            rate: 100.0,
            burst: 200,
        }),
    }
}

fn key_view() -> KeyView {
    KeyView {
        id: "key-1".into(),
        prefix: "tg_abc".into(),
        tenant: "acme".into(),
        name: "ci".into(),
        plans: vec!["gold".into()],
        enabled: true,
        created_at: 1_700_000_000,
    }
}

fn issued_key() -> IssuedKey {
    IssuedKey {
        record: key_view(),
        value: "tg_abcdef".into(),
    }
}

/// `IssueKeyRequest` is only deserialized, so its JSON is written out; the
/// literal keeps it whole.
fn issue_key_request() -> Value {
    let m::IssueKeyRequest {
        tenant,
        name,
        value,
        plans,
    } = m::IssueKeyRequest {
        tenant: "acme".into(),
        name: "ci".into(),
        value: Some("tg_x".into()),
        plans: vec!["gold".into()],
    };
    json!({"tenant": tenant, "name": name, "value": value, "plans": plans})
}
