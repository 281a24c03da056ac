use tollgate_model::docs::{AuthorizerResponse, AuthorizerType, LoadBalancing, QuotaPeriod};
use tollgate_model::stages::Sticky;
use tollgate_model::websocket::Protocol;

use super::*;

/// Each model value has the proto value named by the rule, and back.
fn round_trips<E: Named, T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    values: &[T],
) {
    for v in values {
        let raw = enum_value::<E>(v);
        assert_ne!(raw, 0, "{v:?} has no proto value");
        let doc = Doc::new().enumeration::<E>("f", raw).unwrap().done();
        assert_eq!(&serde_json::from_value::<T>(doc["f"].clone()).unwrap(), v);
    }
}

#[test]
fn enums_follow_the_naming_rule() {
    round_trips::<pb::Protocol, _>(&[Protocol::Http, Protocol::Websocket]);
    round_trips::<pb::LoadBalancing, _>(&[LoadBalancing::RoundRobin, LoadBalancing::LeastRequest]);
    round_trips::<pb::AuthorizerType, _>(&[AuthorizerType::Jwt, AuthorizerType::Request]);
    round_trips::<pb::AuthorizerResponse, _>(&[
        AuthorizerResponse::Simple,
        AuthorizerResponse::Policy,
    ]);
    round_trips::<pb::QuotaPeriod, _>(&[QuotaPeriod::Day, QuotaPeriod::Week, QuotaPeriod::Month]);
    round_trips::<pb::Sticky, _>(&[Sticky::Key, Sticky::Ip, Sticky::None]);
}

#[test]
fn unset_fields_take_the_documents_defaults() {
    let api = tollgate_model::Api::try_from(pb::Api {
        id: "a".into(),
        base_path: "/a".into(),
        upstream: Some(pb::Upstream {
            targets: vec![pb::Target {
                url: "http://x".into(),
                weight: None,
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let json: tollgate_model::Api = serde_json::from_value(serde_json::json!({
        "id": "a", "base_path": "/a", "upstream": {"targets": [{"url": "http://x"}]}}))
    .unwrap();
    assert_eq!(api, json);
}

#[test]
fn bad_values_name_their_field() {
    let bad = |api: pb::Api| tollgate_model::Api::try_from(api).unwrap_err().field;
    let route = |mock| pb::Route {
        id: "r".into(),
        mock: Some(mock),
        ..Default::default()
    };
    let api = pb::Api {
        routes: vec![
            route(pb::Mock::default()),
            route(pb::Mock {
                status: Some(70_000),
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(bad(api), "routes[1].mock.status");
    let api = pb::Api {
        protocol: 9,
        ..Default::default()
    };
    assert_eq!(bad(api), "protocol");
    let plan = pb::UsagePlan {
        quota: Some(pb::Quota {
            limit: 1,
            period: 0,
        }),
        ..Default::default()
    };
    let e = tollgate_model::UsagePlan::try_from(plan).unwrap_err();
    assert_eq!(e.field, "quota", "{e}");
    let authorizer = pb::Authorizer {
        jwks: Some("{".into()),
        ..Default::default()
    };
    let e = tollgate_model::Authorizer::try_from(authorizer).unwrap_err();
    assert_eq!(e.field, "jwks");
}
