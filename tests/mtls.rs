//! Mutual TLS between cluster members: Raft between control-plane nodes and
//! the config stream require a certificate from the cluster CA.

mod common;

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
