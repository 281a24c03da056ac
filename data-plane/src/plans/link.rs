//! Unary calls to the control plane's `Usage` service, failing over across
//! the listed nodes.
//!
//! This is the data plane's gRPC edge for usage plans: the enforcer speaks
//! `tollgate_model::metering` types, and they become wire messages (and
//! back) here only.

use std::sync::Mutex;
use std::time::Duration;

use tollgate_model::metering::{
    DemandReport, DemandShares, Lease, LeaseRequest, Release, UsageReport,
};
use tollgate_model::traffic::TrafficReport;
use tollgate_proto as pb;
use tollgate_proto::auth::BearerToken;
use tollgate_proto::tls::MutualTls;
use tollgate_proto::usage_client::UsageClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type Client = UsageClient<InterceptedService<Channel, BearerToken>>;

/// Why a call to the control plane did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No control-plane endpoint is configured (or none could be used).
    #[error("no control plane")]
    NoControlPlane,
    /// The control plane answered that the request is wrong (invalid
    /// argument or not found): asking another node would not help.
    #[error("{0}")]
    Refused(String),
    /// The call failed otherwise (unreachable, timed out, unavailable).
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::Status> for LinkError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                LinkError::Refused(s.message().to_string())
            }
            _ => LinkError::Failed(s.message().to_string()),
        }
    }
}

/// What became of a traffic report that reached a control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Done,
    /// The control plane has no `Usage.Traffic` (an older one).
    Unsupported,
}

fn request<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    req
}

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
    fn client(&self) -> Option<Client> {
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

    /// Send a metered batch; `Ok` once the cluster applied it.
    pub async fn report(&self, batch: &UsageReport, timeout: Duration) -> Result<(), LinkError> {
        let mut client = self.client().ok_or(LinkError::NoControlPlane)?;
        let msg = pb::UsageBatch::from(batch.clone());
        client.report(request(msg, Some(timeout))).await?;
        Ok(())
    }

    /// Lease a chunk of a key's quota.
    pub async fn lease(&self, req: LeaseRequest, timeout: Duration) -> Result<Lease, LinkError> {
        let mut client = self.client().ok_or(LinkError::NoControlPlane)?;
        let msg = pb::LeaseRequest::from(req);
        Ok(client
            .lease(request(msg, Some(timeout)))
            .await?
            .into_inner()
            .into())
    }

    /// Give unused quota back, waiting for the answer.
    pub async fn release(&self, r: Release) -> Result<(), LinkError> {
        let mut client = self.client().ok_or(LinkError::NoControlPlane)?;
        client
            .release(request(pb::ReleaseRequest::from(r), None))
            .await?;
        Ok(())
    }

    /// Give unused quota back in the background (best effort).
    pub fn release_in_background(&self, r: Release) {
        if let Some(mut client) = self.client() {
            let msg = pb::ReleaseRequest::from(r);
            tokio::spawn(async move {
                let _ = client.release(msg).await;
            });
        }
    }

    /// Send live-traffic windows (`crate::traffic`).
    pub async fn traffic(
        &self,
        report: &TrafficReport,
        timeout: Duration,
    ) -> Result<Sent, LinkError> {
        let mut client = self.client().ok_or(LinkError::NoControlPlane)?;
        let msg = pb::TrafficReport::from(report);
        match client.traffic(request(msg, Some(timeout))).await {
            Ok(_) => Ok(Sent::Done),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Sent::Unsupported),
            Err(s) => Err(s.into()),
        }
    }

    /// Report demand; the answer is this data plane's share of each key.
    pub async fn sync(
        &self,
        report: DemandReport,
        timeout: Duration,
    ) -> Result<DemandShares, LinkError> {
        let mut client = self.client().ok_or(LinkError::NoControlPlane)?;
        let msg = pb::DemandReport::from(report);
        Ok(client
            .sync(request(msg, Some(timeout)))
            .await?
            .into_inner()
            .into())
    }
}
