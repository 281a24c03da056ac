//! Mutual TLS between cluster members: Raft between control-plane nodes and
//! the config stream require a certificate from the cluster CA.

use crate::common;

use std::time::Duration;

use common::dp::{eventually, http, start_dp_mtls};
use common::{init_tracing, Cluster};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use tollgate_proto::tls::MutualTls;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A member certificate for 127.0.0.1, usable as server and client.
    fn member(&self) -> MutualTls {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        MutualTls::from_pem(cert.pem(), key.serialize_pem(), self.cert.pem())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_traffic_needs_a_certificate_from_the_cluster_ca() {
    init_tracing();
    let ca = Ca::new();
    // Raft over mutual TLS: a 3-node cluster forms and replicates.
    let c = Cluster::start_tls(3, ca.member()).await;
    let leader = c.leader().await;
    let rev = c.nodes[leader]
        .client()
        .must_put("/v1/apis/m", json!({"id":"m","base_path":"/m","routes":[{"id":"r","path":"/","mock":{"body":"over mtls"}}]}))
        .await;
    let follower = c.follower(leader);
    let (s, v) = c.nodes[follower].client().get("/v1/apis/m").await;
    assert_eq!(s, 200, "{v}");

    let urls: Vec<String> = c.nodes.iter().map(|n| n.grpc_url()).collect();
    // A data plane with a certificate from the cluster CA gets its config.
    let good = start_dp_mtls(urls.clone(), Some(ca.member())).await;
    common::dp::wait_for_revision(&good, rev).await;
    let r = http()
        .get(format!("http://{}/m", good.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "over mtls");

    // Without a certificate, or with one from another CA: no config bytes.
    let none = start_dp_mtls(urls.clone(), None).await;
    let rogue = start_dp_mtls(urls.clone(), Some(Ca::new().member())).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for dp in [&none, &rogue] {
        assert_eq!(dp.gateway.snapshot().revision(), 0);
        assert!(dp.connection.borrow().endpoint.is_none());
    }
    // And the control plane lists only the good one.
    let admin = c.nodes[leader].client();
    eventually(
        "only the certified data plane listed",
        Duration::from_secs(5),
        || async {
            let (_, v) = admin.get("/v1/cluster").await;
            v["data_planes"].as_array().is_some_and(|l| l.len() == 1)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_the_cluster_ca_cannot_join_raft() {
    init_tracing();
    let ca = Ca::new();
    let c = Cluster::start_tls(3, ca.member()).await;
    let leader = c.leader().await;
    let dir = tempfile::tempdir().unwrap();
    for (id, tls) in [(7u64, Some(Ca::new().member())), (8, None)] {
        // The node runs (its own gRPC port, with another CA's certificate
        // or none), and asks to be added.
        let node = common::start_node(
            id,
            &dir.path().join(id.to_string()),
            "127.0.0.1:0",
            "127.0.0.1:0",
            tollgate_control_plane::Membership::Resume,
            common::tuning(),
            &common::Credentials {
                tls,
                ..Default::default()
            },
        )
        .await;
        let t = std::time::Instant::now();
        let (s, v) = c.nodes[leader]
            .client()
            .post(
                "/v1/cluster/members",
                json!({"id": id, "grpc_addr": node.grpc_addr, "admin_addr": node.admin_addr}),
            )
            .await;
        assert_eq!(s, 503, "node {id}: {v}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // It is not a member, and the cluster still works.
        let (_, cluster) = c.nodes[leader].client().get("/v1/cluster").await;
        let members = cluster["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{cluster}");
        assert!(node
            .control
            .raft
            .metrics()
            .borrow()
            .current_leader
            .is_none());
        node.shutdown().await;
    }
    c.nodes[leader]
        .client()
        .must_put("/v1/tenants/still-works", json!({"name": "t"}))
        .await;
}
