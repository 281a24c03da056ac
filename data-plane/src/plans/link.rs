//! Unary calls to the control plane's `Usage` service, failing over across
//! the listed nodes.

use std::sync::Mutex;
use std::time::Duration;

use tollgate_proto::auth::BearerToken;
use tollgate_proto::tls::MutualTls;
use tollgate_proto::usage_client::UsageClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Client = UsageClient<InterceptedService<Channel, BearerToken>>;

pub struct ControlPlaneLink {
    endpoints: Vec<String>,
    token: BearerToken,
    tls: Option<MutualTls>,
    /// (index into `endpoints`, its channel).
    current: Mutex<(usize, Option<Channel>)>,
}

impl ControlPlaneLink {
    pub fn new(endpoints: Vec<String>, token: &str, tls: Option<MutualTls>) -> Self {
        Self {
            endpoints,
            token: BearerToken::new(token),
            tls,
            current: Mutex::new((rand::random::<usize>() % 1024, None)),
        }
    }

    /// A client for the node in use (connected lazily).
    pub fn client(&self) -> Option<Client> {
        if self.endpoints.is_empty() {
            return None;
        }
        let mut cur = self.current.lock().expect("link lock");
        if cur.1.is_none() {
            let url = &self.endpoints[cur.0 % self.endpoints.len()];
            let ep = match &self.tls {
                Some(tls) => tls.endpoint(url),
                None => Endpoint::from_shared(url.clone()),
            }
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
            cur.1 = Some(ep.connect_lazy());
        }
        let channel = cur.1.clone()?;
        Some(UsageClient::with_interceptor(channel, self.token.clone()))
    }

    /// The last call failed: use the next node from now on.
    pub fn failed(&self) {
        let mut cur = self.current.lock().expect("link lock");
        cur.0 += 1;
        cur.1 = None;
    }
}
