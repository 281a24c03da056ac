//! The importer on real published definitions (AWS's three exports, the
//! Swagger Petstore) and on small definitions, one rule each.

use serde_json::{json, Value};

use super::openapi::{translate, Translation};
use super::spec::{self, Options};

/// A file of `tests/data/`, read at build time so a clean clone has it.
macro_rules! data {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/", $path))
    };
}

fn import_with(text: &str, opts: &Options) -> Translation {
    let (doc, flavour) = spec::parse(text).expect("a definition");
    let t = translate(&doc, flavour, opts);
    for a in &t.authorizers {
        a.validate()
            .unwrap_or_else(|e| panic!("authorizer/{}: {e}", a.id));
    }
    t.api
        .validate()
        .unwrap_or_else(|e| panic!("api/{}: {e}", t.api.id));
    t
}

fn import(text: &str) -> Translation {
    import_with(text, &Options::default())
}

fn api_json(t: &Translation) -> Value {
    serde_json::to_value(&t.api).unwrap()
}

#[test]
fn aws_petstore_http_integrations_become_upstream_paths() {
    let t = import(data!("aws-openapi-examples/petstore-http.swagger2.json"));
    assert_eq!(t.notes, Vec::<String>::new());
    assert_eq!(
        api_json(&t),
        json!({
            "id": "simple-pet-store-open-api",
            "base_path": "/",
            "upstream": {"targets": [{"url": "http://petstore-demo-endpoint.execute-api.com", "weight": 1}],
                         "load_balancing": "round_robin", "timeout_ms": 29000, "retries": 1,
                         "circuit_breaker_failures": 5, "idle_timeout_ms": 60000},
            "auth": {},
            "routes": [
                {"id": "get-pets", "methods": ["GET"], "path": "/pets", "upstream_path": "/petstore/pets"},
                {"id": "get-pets-pet-id", "methods": ["GET"], "path": "/pets/{petId}",
                 "upstream_path": "/petstore/pets/{petId}"}
            ]
        })
    );
    assert!(t.authorizers.is_empty());
}

#[test]
fn aws_lambda_proxy_becomes_a_function_route_with_a_listed_placeholder() {
    let text = data!("aws-openapi-examples/lambda-proxy.oas30.json");
    let t = import(text);
    let at = "/paths/~1{proxy+}/x-amazon-apigateway-any-method/x-amazon-apigateway-integration";
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:SimpleLambda4ProxyResource";
    assert_eq!(
        t.notes,
        [
            format!("{at}/uri: function {arn}: its Invoke URL is not in the definition; placeholder http://lambda.invalid (give --function-url)"),
            format!("{at}/cacheKeyParameters: not translated (AWS stage cache keys; give the route a cache)"),
        ]
    );
    let api = api_json(&t);
    assert_eq!(api["id"], "proxy-integration-with-lambda");
    assert_eq!(
        api["base_path"], "/testStage",
        "the server variable's default"
    );
    assert_eq!(
        api.get("upstream"),
        None,
        "function routes need no upstream"
    );
    assert_eq!(
        api["routes"],
        json!([{"id": "any-proxy", "methods": [], "path": "/{proxy+}",
                "function": {"url": "http://lambda.invalid", "name": arn, "payload": "1.0", "timeout_ms": 29000}}])
    );
    let opts = Options {
        function_url: Some("http://127.0.0.1:9001".into()),
        ..Options::default()
    };
    let t = import_with(text, &opts);
    assert_eq!(
        t.api.routes[0].function.as_ref().unwrap().url,
        "http://127.0.0.1:9001"
    );
    assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
}

#[test]
fn aws_api_key_methods_require_keys_and_the_rest_is_listed() {
    let t = import(data!(
        "aws-openapi-examples/apikey-validators.swagger2.json"
    ));
    let api = api_json(&t);
    assert_eq!(api["id"], "req-validators-sample");
    assert_eq!(api["base_path"], "/v1");
    assert_eq!(
        api["auth"],
        json!({"api_key": true}),
        "both methods need a key"
    );
    let routes = api["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    for r in routes {
        assert_eq!(r["upstream_path"], "/petstore/pets");
        assert_eq!(r.get("auth"), None);
    }
    let ix = |m: &str| format!("/paths/~1validation/{m}/x-amazon-apigateway-integration");
    let mapping = "integration response mapping; the upstream's status and body pass through";
    let expected = vec![
        "/definitions: not translated (models: Tollgate does not validate bodies)".to_string(),
        "/x-amazon-apigateway-request-validator: not translated (request validation)".into(),
        "/x-amazon-apigateway-request-validators: not translated (request validation)".into(),
        format!("{}/requestParameters/integration.request.querystring.type: not translated (request parameter mapping)", ix("get")),
        format!("{}/responses/2\\d{{2}}: not translated ({mapping})", ix("get")),
        format!("{}/responses/default: not translated ({mapping})", ix("get")),
        "/paths/~1validation/post/x-amazon-apigateway-request-validator: not translated (request validation)".into(),
        format!("{}/requestParameters/integration.request.header.custom_h1: not translated (request parameter mapping)", ix("post")),
        format!("{}/responses/2\\d{{2}}: not translated ({mapping})", ix("post")),
        format!("{}/responses/default: not translated ({mapping})", ix("post")),
    ];
    assert_eq!(t.notes, expected);
}

#[test]
fn swagger_petstore_openapi3_forwards_under_its_server_path() {
    let t = import(data!("swagger-petstore/openapi.yaml"));
    let api = api_json(&t);
    assert_eq!(api["id"], "swagger-petstore-open-api-3-0");
    assert_eq!(api["base_path"], "/api/v3");
    assert_eq!(
        api["upstream"]["targets"][0]["url"],
        "https://petstore3.swagger.io"
    );
    assert_eq!(api["auth"], json!({}), "the routes' policies differ");
    let route = |id: &str| {
        t.api
            .routes
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("route {id}"))
    };
    assert_eq!(t.api.routes.len(), 19);
    let get_pet = route("get-pet-by-id");
    assert_eq!(get_pet.path, "/pet/{petId}");
    assert_eq!(
        get_pet.upstream_path.as_deref(),
        Some("/api/v3/pet/{petId}")
    );
    // api_key OR petstore_auth: the key, the alternative Tollgate checks.
    assert!(get_pet.auth.as_ref().unwrap().api_key);
    // petstore_auth (OAuth 2) alone: closed with a key, never open.
    assert!(route("update-pet").auth.as_ref().unwrap().api_key);
    // No security: open, as the API.
    assert_eq!(route("place-order").auth, None);
    // Swagger's own router extension, on 7 operations.
    let (router, rest): (Vec<_>, Vec<_>) = t.notes.iter().partition(|n| {
        n.ends_with("/x-swagger-router-controller: not translated (unknown extension)")
    });
    assert_eq!(router.len(), 7, "{router:?}");
    assert_eq!(
        rest,
        [
            "/components/schemas: not translated (models: Tollgate does not validate bodies)",
            "/components/securitySchemes/api_key: API key in header \"api_key\": Tollgate reads keys from the x-api-key header",
            "/components/securitySchemes/petstore_auth: not translated (oauth2 scheme; routes that need it alone require an API key instead)",
        ]
    );
}

#[test]
fn yaml_with_unquoted_status_keys_and_no_info_at_all() {
    let t = import("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n");
    assert_eq!(t.api.id, "imported-api");
    assert_eq!(t.api.base_path, "/");
    assert_eq!(
        t.notes,
        [
            "/info/title: no title to name the API by; its id is imported-api (give --api-id)",
            "/servers: no upstream for routes without an integration; placeholder http://upstream.invalid (give --upstream)",
        ]
    );
    assert_eq!(
        t.api.upstream.as_ref().unwrap().targets[0].url,
        "http://upstream.invalid"
    );
}

#[test]
fn flags_override_id_base_path_and_upstream() {
    let opts = Options {
        api_id: Some("pets".into()),
        base_path: Some("/pets-v2".into()),
        upstream: Some("http://10.0.0.5:8000/backend".into()),
        ..Options::default()
    };
    let t = import_with(data!("swagger-petstore/openapi.yaml"), &opts);
    assert_eq!(
        (t.api.id.as_str(), t.api.base_path.as_str()),
        ("pets", "/pets-v2")
    );
    assert_eq!(
        t.api.upstream.as_ref().unwrap().targets[0].url,
        "http://10.0.0.5:8000"
    );
    assert_eq!(
        t.api.routes[0].upstream_path.as_deref(),
        Some("/backend/pet"),
        "{:?}",
        t.api.routes[0]
    );
}

#[test]
fn route_ids_are_unique_and_parameters_valid() {
    let t = import(
        r#"{"swagger": "2.0", "info": {"title": "t"}, "host": "h.example",
            "paths": {
              "/a/{item-id}": {"get": {"operationId": "same"}, "put": {"operationId": "same"}},
              "/b/{x}.json": {"get": {}},
              "/c": {"trace": {}, "x-custom": 1}
            }}"#,
    );
    let ids: Vec<_> = t.api.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["same", "same-2"]);
    assert_eq!(t.api.routes[0].path, "/a/{item_id}");
    assert_eq!(
        t.api.routes[0].upstream_path, None,
        "the server has no path"
    );
    assert_eq!(
        t.api.upstream.as_ref().unwrap().targets[0].url,
        "https://h.example"
    );
    assert_eq!(t.notes.len(), 3, "{:?}", t.notes);
    assert!(t.notes[0].starts_with("/paths/~1b~1{x}.json: not translated (path: "));
    assert_eq!(
        t.notes[1],
        "/paths/~1c/trace: not translated (a method Tollgate does not route)"
    );
    assert_eq!(
        t.notes[2],
        "/paths/~1c/x-custom: not translated (unknown extension)"
    );
}

#[test]
fn one_upstream_per_api_and_mocks() {
    let t = import(
        r#"{"openapi": "3.0.1", "info": {"title": "two hosts"},
            "paths": {
              "/a": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "https://one.example/a", "httpMethod": "ANY", "timeoutInMillis": 5000}}},
              "/b": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "https://one.example/b/{proxy}"}}},
              "/c": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "https://two.example/c"}}},
              "/d": {"options": {"x-amazon-apigateway-integration": {"type": "mock",
                  "requestTemplates": {"application/json": "{\"statusCode\": 200}"},
                  "responses": {"default": {"statusCode": "204",
                      "responseParameters": {"method.response.header.Access-Control-Allow-Origin": "'*'"},
                      "responseTemplates": {"application/json": "{\"ok\": true}"}}}}}}
            }}"#,
    );
    let ids: Vec<_> = t.api.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["get-a", "options-d"], "{:?}", t.notes);
    let up = t.api.upstream.as_ref().unwrap();
    assert_eq!(
        (up.targets[0].url.as_str(), up.timeout_ms),
        ("https://one.example", 5000)
    );
    let mock = t.api.routes[1].mock.as_ref().unwrap();
    assert_eq!((mock.status, mock.body.as_str()), (204, "{\"ok\": true}"));
    assert_eq!(mock.headers["access-control-allow-origin"], "*");
    assert_eq!(mock.headers["content-type"], "application/json");
    assert_eq!(
        t.notes,
        [
            "/paths/~1b/get/x-amazon-apigateway-integration/uri: not translated ({proxy} has no source in requestParameters; the route is left out)",
            "/paths/~1c/get: not translated (upstream https://two.example: an API has one upstream, https://one.example; the route is left out)",
        ]
    );
}

#[test]
fn http_api_jwt_and_lambda_authorizers_and_cors() {
    let t = import(
        r#"{"openapi": "3.0.1", "info": {"title": "orders"},
            "x-amazon-apigateway-cors": {"allowOrigins": ["https://app.example"], "allowMethods": ["*"], "allowHeaders": ["Authorization"], "maxAge": 600},
            "components": {"securitySchemes": {
              "jwt": {"type": "oauth2", "flows": {}, "x-amazon-apigateway-authorizer": {"type": "jwt",
                  "identitySource": "$request.header.Authorization",
                  "jwtConfiguration": {"issuer": "https://issuer.example/", "audience": ["orders-api"]}}},
              "custom": {"type": "apiKey", "name": "Authorization", "in": "header",
                  "x-amazon-apigateway-authtype": "custom",
                  "x-amazon-apigateway-authorizer": {"type": "token", "authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:auth/invocations",
                      "authorizerResultTtlInSeconds": 60}}}},
            "paths": {
              "/a": {"get": {"security": [{"jwt": ["orders:read"]}],
                     "x-amazon-apigateway-integration": {"type": "mock"}}},
              "/b": {"get": {"security": [{"custom": []}],
                     "x-amazon-apigateway-integration": {"type": "mock"}}}
            }}"#,
    );
    let ids: Vec<_> = t.authorizers.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["orders-custom", "orders-jwt"]);
    let custom = serde_json::to_value(&t.authorizers[0]).unwrap();
    assert_eq!(
        custom,
        json!({"id": "orders-custom", "type": "request", "audiences": [], "endpoint": "http://authorizer.invalid",
               "identity_sources": ["header:authorization"], "ttl_s": 60, "response": "policy"})
    );
    let jwt = &t.authorizers[1];
    assert_eq!(jwt.issuer, "https://issuer.example/");
    assert_eq!(jwt.audiences, ["orders-api"]);
    assert_eq!(
        jwt.jwks_uri.as_deref(),
        Some("https://issuer.example/.well-known/jwks.json")
    );
    let auth = |i: usize| serde_json::to_value(t.api.routes[i].auth.as_ref().unwrap()).unwrap();
    assert_eq!(
        auth(0),
        json!({"authorizer": "orders-jwt", "scopes": ["orders:read"]})
    );
    assert_eq!(auth(1), json!({"authorizer": "orders-custom"}));
    let cors = t.api.cors.as_ref().unwrap();
    assert_eq!(
        cors.allow_methods.len(),
        tollgate_model::validate::METHODS.len()
    );
    assert_eq!(
        (cors.allow_headers.as_slice(), cors.max_age_s),
        (&["authorization".to_string()][..], Some(600))
    );
    assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
    assert!(t.notes[0].starts_with(
        "/components/securitySchemes/custom/x-amazon-apigateway-authorizer/authorizerUri: arn:aws:"
    ));
    assert!(t.notes[0].contains("placeholder http://authorizer.invalid (give --authorizer-url)"));
    assert!(t.notes[1].starts_with(
        "/components/securitySchemes/jwt/x-amazon-apigateway-authorizer: jwks_uri set to"
    ));
}

#[test]
fn cognito_pools_and_iam_and_key_source_authorizer() {
    let t = import(
        r#"{"swagger": "2.0", "info": {"title": "c"}, "host": "h.example",
            "x-amazon-apigateway-api-key-source": "AUTHORIZER",
            "securityDefinitions": {
              "pool": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "cognito_user_pools",
                       "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools", "providerARNs": ["arn:aws:cognito-idp:eu-west-1:123:userpool/eu-west-1_AbC"]}},
              "lambda": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "custom",
                       "x-amazon-apigateway-authorizer": {"type": "request", "identitySource": "method.request.header.Auth, method.request.querystring.token, context.x"}},
              "sigv4": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"}},
            "paths": {
              "/p": {"get": {"security": [{"pool": ["email"]}]}},
              "/l": {"get": {"security": [{"api_key": [], "lambda": []}]}},
              "/s": {"get": {"security": [{"sigv4": []}]}}
            }}"#,
    );
    let pool = t.authorizers.iter().find(|a| a.id == "c-pool").unwrap();
    assert_eq!(
        pool.issuer,
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
    );
    assert_eq!(
        pool.jwks_uri.as_deref(),
        Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC/.well-known/jwks.json")
    );
    let lambda = t.authorizers.iter().find(|a| a.id == "c-lambda").unwrap();
    assert_eq!(lambda.identity_sources, ["header:auth", "query:token"]);
    let auth = |path: &str| {
        let r = t.api.routes.iter().find(|r| r.path == path).unwrap();
        serde_json::to_value(r.auth.as_ref().unwrap_or(&t.api.auth)).unwrap()
    };
    assert_eq!(
        auth("/p"),
        json!({"authorizer": "c-pool", "scopes": ["email"]})
    );
    // The authorizer's usageIdentifierKey is the key.
    assert_eq!(auth("/l"), json!({"authorizer": "c-lambda"}));
    // IAM: closed with a key.
    assert_eq!(auth("/s"), json!({"api_key": true}));
    assert!(
        t.notes.iter().any(|n| n == "/securityDefinitions/lambda/x-amazon-apigateway-authorizer/identitySource: not translated (identity source context.x)"),
        "{:?}",
        t.notes
    );
    assert!(t
        .notes
        .iter()
        .any(|n| n.starts_with("/securityDefinitions/sigv4: not translated (awsSigv4 scheme")));
}

#[test]
fn integrations_that_have_no_equivalent_leave_their_route_out() {
    let t = import(
        r##"{"openapi": "3.0.1", "info": {"title": "x"},
            "paths": {
              "/s3": {"get": {"x-amazon-apigateway-integration": {"type": "aws", "uri": "arn:aws:apigateway:us-east-1:s3:path/b"}}},
              "/vpc": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://nlb.internal/x", "connectionType": "VPC_LINK", "connectionId": "abc",
                  "requestTemplates": {"application/json": "#set($x = 1)"}, "contentHandling": "CONVERT_TO_TEXT"}}}
            }}"##,
    );
    assert_eq!(t.api.routes.len(), 1);
    assert_eq!(
        t.notes,
        [
            "/paths/~1s3/get/x-amazon-apigateway-integration: not translated (an AWS service integration; the route is left out)",
            "/paths/~1vpc/get/x-amazon-apigateway-integration/connectionId: not translated (VPC link)",
            "/paths/~1vpc/get/x-amazon-apigateway-integration/connectionType: not translated (VPC link)",
            "/paths/~1vpc/get/x-amazon-apigateway-integration/contentHandling: not translated (binary content handling)",
            "/paths/~1vpc/get/x-amazon-apigateway-integration/requestTemplates: not translated (VTL mapping templates)",
        ]
    );
}

#[test]
fn a_route_the_model_refuses_is_left_out_by_name() {
    // A mock status of 999 does not pass the model's validation.
    let t = import(
        r#"{"openapi": "3.0.1", "info": {"title": "x"},
            "paths": {"/m": {"get": {"x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "999"}}}}}}}"#,
    );
    assert!(t.api.routes.is_empty());
    assert_eq!(
        t.notes,
        ["/paths/~1m/get: not translated (routes[0].mock.status: must be 100 to 599; the route is left out)"]
    );
}

#[test]
fn stage_variables_stay_stage_variables() {
    let t = import(
        r#"{"openapi": "3.0.1", "info": {"title": "x"},
            "paths": {"/items/{id}": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy",
                "uri": "https://${stageVariables.host}/${stageVariables.prefix}/items/{id}",
                "requestParameters": {"integration.request.path.id": "method.request.path.id"}}}}}}"#,
    );
    assert_eq!(t.notes, Vec::<String>::new());
    assert_eq!(
        t.api.upstream.as_ref().unwrap().targets[0].url,
        "https://${stageVariables.host}"
    );
    assert_eq!(
        t.api.routes[0].upstream_path.as_deref(),
        Some("/${stageVariables.prefix}/items/{id}")
    );
}
