//! gRPC plumbing shared by every internal client and server: bearer-token
//! authentication and a cache of one channel per peer address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tollgate_model::key::constant_time_eq;
pub use tollgate_proto::auth::BearerToken;
use tollgate_proto::tls::MutualTls;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Refuses calls that do not carry the expected bearer token.
#[derive(Clone)]
pub struct RequireToken {
    token: Arc<str>,
}

impl RequireToken {
    pub fn new(token: &str) -> Self {
        Self {
            token: token.into(),
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if constant_time_eq(t, &self.token) => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong token")),
        }
    }
}

pub type PeerChannel = InterceptedService<Channel, BearerToken>;

/// One lazily connected channel per peer address, reused by every client.
#[derive(Clone)]
pub struct Channels {
    token: BearerToken,
    tls: Option<MutualTls>,
    map: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    pub fn new(cluster_token: &str, tls: Option<MutualTls>) -> Self {
        Self {
            token: BearerToken::new(cluster_token),
            tls,
            map: Arc::default(),
        }
    }

    pub fn get(&self, addr: &str) -> PeerChannel {
        let mut map = self.map.lock().expect("channel cache lock");
        let channel = map
            .entry(addr.to_string())
            .or_insert_with(|| {
                match &self.tls {
                    Some(tls) => tls.endpoint(addr),
                    None => Endpoint::from_shared(addr.to_string()),
                }
                .expect("peer addresses are validated URLs")
                .connect_timeout(std::time::Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy()
            })
            .clone();
        InterceptedService::new(channel, self.token.clone())
    }
}
