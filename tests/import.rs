//! `tollgate import openapi` as a process: AWS's PetStore export applied to
//! a real cluster and served by a data plane (its integration URIs pointed
//! at a local upstream), the Lambda proxy export served through a function
//! stand-in, untranslatable parts listed with exit 0, and a file that is
//! no definition refused with exit 1 and one line.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::dp::{http, start_dp, start_echo};
use common::{init_tracing, Cluster, ADMIN_TOKEN};
use serde_json::Value;

fn data(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(path),
    )
    .unwrap()
}

/// `tollgate import openapi FILE ARGS…`, off the runtime's threads.
async fn import(file: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["import", "openapi"])
        .arg(file)
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// GET through the data plane until it answers 200; the JSON body.
async fn served(proxy: std::net::SocketAddr, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = http().get(format!("http://{proxy}{path}")).send().await {
            if r.status() == 200 {
                return r.json().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "GET {path} never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_exports_imported_with_apply_are_served() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let (echo, _stop) = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = cluster.nodes[0].admin_url();

    // PetStore: its http integrations pointed at the echo upstream.
    let petstore = dir.path().join("petstore.json");
    let exported = data("aws-openapi-examples/petstore-http.swagger2.json").replace(
        "http://petstore-demo-endpoint.execute-api.com",
        &format!("http://{echo}"),
    );
    std::fs::write(&petstore, exported).unwrap();
    let out = import(&petstore, &["--apply", "--server", &admin]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("api/simple-pet-store-open-api created"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stderr), "", "nothing left untranslated");

    // The Lambda proxy export, its function invoked at the echo's stand-in.
    let lambda = dir.path().join("lambda.json");
    std::fs::write(
        &lambda,
        data("aws-openapi-examples/lambda-proxy.oas30.json"),
    )
    .unwrap();
    let function_url = format!("http://{echo}");
    let out = import(
        &lambda,
        &[
            "--apply",
            "--server",
            &admin,
            "--function-url",
            &function_url,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cacheKeyParameters: not translated"));

    let dp = start_dp(vec![cluster.nodes[0].grpc_url()], None).await;
    // `integration.request.path.id` ← `method.request.path.petId`.
    let answer = served(dp.proxy_addr, "/pets/42").await;
    assert_eq!(answer["path"], "/petstore/pets/42", "{answer}");
    assert_eq!(answer["method"], "GET");
    let answer = served(dp.proxy_addr, "/pets").await;
    assert_eq!(answer["path"], "/petstore/pets", "{answer}");
    let answer = served(dp.proxy_addr, "/testStage/any/path").await;
    // The Invoke path carries the name percent-encoded, as AWS's SDKs send it.
    let function = answer["function"]
        .as_str()
        .unwrap_or_default()
        .replace("%3A", ":");
    assert_eq!(
        function, "arn:aws:lambda:us-east-1:123456789012:function:SimpleLambda4ProxyResource",
        "{answer}"
    );

    // Applied again: nothing changes.
    let out = import(&petstore, &["--apply", "--server", &admin]).await;
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn untranslatable_parts_are_listed_and_the_rest_printed() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/aws-openapi-examples/apikey-validators.swagger2.json");
    let out = import(&file, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l
                == "/x-amazon-apigateway-request-validators: not translated (request validation)"),
        "{stderr}"
    );
    assert!(stderr.lines().all(|l| l.starts_with('/')), "{stderr}");
    // What was printed is what `apply -f` reads.
    let stdout = text(&out.stdout);
    let docs = tollgate_control_plane::declarative::parse(&stdout).unwrap();
    assert_eq!(docs.len(), 1, "{stdout}");
    assert_eq!(docs[0].body["auth"]["api_key"], true, "{stdout}");
    assert_eq!(
        docs[0].body["routes"].as_array().unwrap().len(),
        2,
        "{stdout}"
    );
}

#[tokio::test]
async fn a_file_that_is_no_definition_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.yaml");
    std::fs::write(&file, "kind: Api\nid: orders\nbase_path: /orders\n").unwrap();
    let out = import(&file, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("not an OpenAPI or Swagger document"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = import(&dir.path().join("missing.yaml"), &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).lines().count(), 1);

    // Bad usage is clap's: exit 2.
    let out = import(&file, &["--api-id", "Not An Id"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
