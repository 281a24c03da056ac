//! `TypedAdmin`: the admin API with a message per document kind, beside
//! `Admin`'s JSON form, and server reflection for both, so `grpcurl` and
//! clients generated in other languages need nothing but the port.
//!
//! Like `grpc`, thin: a message becomes a model document at this edge
//! (`tollgate_proto::typed`), then the same `ControlPlane` call REST and the
//! JSON rpcs make, so a bad field answers INVALID_ARGUMENT naming it, alike.

use std::sync::Arc;

use tollgate_model::{Resource, ResourceKind, ValidationError};
use tollgate_proto as pb;
use tollgate_proto::typed::ToDocument;
use tonic::{Request, Response, Status};
use tonic_reflection::server::{v1, v1alpha};

use crate::service::{ApiError, ControlPlane, IssuedKey, KeyView};

pub struct TypedAdminService {
    pub cp: Arc<ControlPlane>,
}

/// A kind whose stored documents read as a message.
trait Shown: Sized {
    const KIND: ResourceKind;
    /// `None` for a resource of another kind.
    fn shown(revision: u64, r: &Resource) -> Option<Self>;
}

/// A kind written as a message.
trait Written {
    fn into_resource(self) -> Result<Resource, ValidationError>;
}

/// The document kinds whose message, model type, `Resource` variant and
/// `ResourceKind` share one name.
macro_rules! documents {
    ($($kind:ident),* $(,)?) => {$(
        impl Shown for pb::$kind {
            const KIND: ResourceKind = ResourceKind::$kind;
            fn shown(revision: u64, r: &Resource) -> Option<Self> {
                match r {
                    Resource::$kind(d) => Some(Self { revision, ..d.into() }),
                    _ => None,
                }
            }
        }
        impl Written for pb::$kind {
            fn into_resource(self) -> Result<Resource, ValidationError> {
                Ok(Resource::$kind(self.try_into()?))
            }
        }
    )*};
}

documents!(Api, Authorizer, Tenant, UsagePlan, Stage);

impl Shown for pb::ApiKey {
    const KIND: ResourceKind = ResourceKind::ApiKey;
    fn shown(revision: u64, r: &Resource) -> Option<Self> {
        match r {
            // Through `KeyView`, the one place that decides what a key shows.
            Resource::ApiKey(k) => Some(Self {
                revision,
                ..KeyView::from(k).into()
            }),
            _ => None,
        }
    }
}

impl From<KeyView> for pb::ApiKey {
    fn from(k: KeyView) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            tenant: k.tenant,
            name: k.name,
            plans: k.plans,
            enabled: k.enabled,
            created_at: k.created_at,
            revision: 0,
        }
    }
}

fn issued(revision: u64, k: IssuedKey) -> pb::IssuedKey {
    let r = k.record;
    pb::IssuedKey {
        id: r.id,
        prefix: r.prefix,
        tenant: r.tenant,
        name: r.name,
        plans: r.plans,
        enabled: r.enabled,
        created_at: r.created_at,
        value: k.value,
        revision,
    }
}

type Answer<T> = Result<Response<T>, Status>;

impl TypedAdminService {
    async fn put<M: Written>(&self, m: Request<M>) -> Answer<pb::WriteReply> {
        let resource = m.into_inner().into_resource().map_err(ApiError::from)?;
        let (revision, _) = self.cp.put_resource(resource).await?;
        Ok(Response::new(pb::WriteReply { revision }))
    }

    async fn get<M: Shown>(&self, req: Request<pb::GetByIdRequest>) -> Answer<M> {
        let r = req.into_inner();
        let (revision, resource) = self.cp.get(M::KIND, &r.id, r.stale).await?;
        Ok(Response::new(shown(revision, &resource)?))
    }

    async fn list<M: Shown>(&self, req: Request<pb::ListAllRequest>) -> Result<Vec<M>, Status> {
        let stale = req.into_inner().stale;
        let items = self.cp.list(M::KIND, stale).await?;
        items.iter().map(|(rev, r)| shown(*rev, r)).collect()
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        req: Request<pb::DeleteByIdRequest>,
    ) -> Answer<pb::WriteReply> {
        let revision = self.cp.delete(kind, &req.into_inner().id).await?;
        Ok(Response::new(pb::WriteReply { revision }))
    }
}

fn shown<M: Shown>(revision: u64, r: &Resource) -> Result<M, Status> {
    M::shown(revision, r).ok_or_else(|| {
        Status::internal(format!(
            "{} read as {}",
            r.kind().as_str(),
            M::KIND.as_str()
        ))
    })
}

#[tonic::async_trait]
impl pb::typed_admin_server::TypedAdmin for TypedAdminService {
    async fn put_api(&self, req: Request<pb::Api>) -> Answer<pb::WriteReply> {
        self.put(req).await
    }
    async fn get_api(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::Api> {
        self.get(req).await
    }
    async fn list_apis(&self, req: Request<pb::ListAllRequest>) -> Answer<pb::ApiList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::ApiList { items }))
    }
    async fn delete_api(&self, req: Request<pb::DeleteByIdRequest>) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::Api, req).await
    }

    async fn put_authorizer(&self, req: Request<pb::Authorizer>) -> Answer<pb::WriteReply> {
        self.put(req).await
    }
    async fn get_authorizer(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::Authorizer> {
        self.get(req).await
    }
    async fn list_authorizers(
        &self,
        req: Request<pb::ListAllRequest>,
    ) -> Answer<pb::AuthorizerList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::AuthorizerList { items }))
    }
    async fn delete_authorizer(
        &self,
        req: Request<pb::DeleteByIdRequest>,
    ) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::Authorizer, req).await
    }

    async fn put_tenant(&self, req: Request<pb::Tenant>) -> Answer<pb::WriteReply> {
        self.put(req).await
    }
    async fn get_tenant(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::Tenant> {
        self.get(req).await
    }
    async fn list_tenants(&self, req: Request<pb::ListAllRequest>) -> Answer<pb::TenantList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::TenantList { items }))
    }
    async fn delete_tenant(&self, req: Request<pb::DeleteByIdRequest>) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::Tenant, req).await
    }

    async fn put_usage_plan(&self, req: Request<pb::UsagePlan>) -> Answer<pb::WriteReply> {
        self.put(req).await
    }
    async fn get_usage_plan(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::UsagePlan> {
        self.get(req).await
    }
    async fn list_usage_plans(
        &self,
        req: Request<pb::ListAllRequest>,
    ) -> Answer<pb::UsagePlanList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::UsagePlanList { items }))
    }
    async fn delete_usage_plan(
        &self,
        req: Request<pb::DeleteByIdRequest>,
    ) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::UsagePlan, req).await
    }

    async fn put_stage(&self, req: Request<pb::Stage>) -> Answer<pb::WriteReply> {
        self.put(req).await
    }
    async fn get_stage(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::Stage> {
        self.get(req).await
    }
    async fn list_stages(&self, req: Request<pb::ListAllRequest>) -> Answer<pb::StageList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::StageList { items }))
    }
    async fn delete_stage(&self, req: Request<pb::DeleteByIdRequest>) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::Stage, req).await
    }

    async fn issue_key(&self, req: Request<pb::IssueKeyRequest>) -> Answer<pb::IssuedKey> {
        let mut r = req.into_inner();
        let idempotency_key = r.idempotency_key.take();
        // As the REST body: issue_key parses and checks it as it does that.
        let body = r.to_document().map_err(ApiError::from)?.to_string();
        let (revision, key) = self
            .cp
            .issue_key(body.as_bytes(), idempotency_key.as_deref())
            .await?;
        Ok(Response::new(issued(revision, key)))
    }
    async fn get_api_key(&self, req: Request<pb::GetByIdRequest>) -> Answer<pb::ApiKey> {
        self.get(req).await
    }
    async fn list_api_keys(&self, req: Request<pb::ListAllRequest>) -> Answer<pb::ApiKeyList> {
        let items = self.list(req).await?;
        Ok(Response::new(pb::ApiKeyList { items }))
    }
    async fn delete_api_key(&self, req: Request<pb::DeleteByIdRequest>) -> Answer<pb::WriteReply> {
        self.delete(ResourceKind::ApiKey, req).await
    }
}

/// Server reflection, v1 and v1alpha (grpcurl asks for either), over every
/// service this port serves.
///
/// Served without a token: it tells the schema, which ships with every
/// release, and nothing of the cluster's state, and tools discover a server
/// before they are handed a credential. Every call that reads or changes
/// anything still needs its token.
pub fn reflection() -> anyhow::Result<(
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
