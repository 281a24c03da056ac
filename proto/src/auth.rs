//! Bearer-token authentication for internal gRPC clients (peers and data
//! planes), shared by both halves so there is one way to present the token.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every outgoing call.
#[derive(Clone)]
pub struct BearerToken {
    header: MetadataValue<Ascii>,
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self {
            header: format!("Bearer {token}")
                .parse()
                .expect("token is valid ASCII"),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(req)
    }
}
