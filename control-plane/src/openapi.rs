//! The admin API's OpenAPI 3.1 document (`GET /v1/openapi.json`).
//!
//! Paths and operations come from the handlers' `#[utoipa::path]`
//! attributes through `rest`'s one route table, which also builds the
//! router, so a route cannot be served undocumented. Here: the answers that
//! are not documents, the forms a document takes on the wire (as read, with
//! its `revision`; as a PUT body), and what every operation shares (the
//! error shape, the admin token).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// What the document says before the routes are added.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "The control plane's admin REST API (contract §2). Every 4xx and 5xx \
                       answer is `{\"error\": {\"code\", \"message\"}}`; `/v1` needs \
                       `Authorization: Bearer <admin token>`, except this document."
    ),
    components(schemas(ErrorBody))
)]
pub struct Base;

const ADMIN_TOKEN: &str = "admin_token";

/// The routes' document, with what every operation shares: an error
/// answer in the error shape for every status it does not list, and the
/// admin token on `/v1` (unless the operation says `security(())`).
pub fn finish(mut doc: OpenApi) -> OpenApi {
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let error = ResponseBuilder::new()
        .description("An error, in the one error shape")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let under_v1 = path.starts_with("/v1/");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| error.clone().into());
            if under_v1 && op.security.is_none() {
                op.security = Some(vec![SecurityRequirement::new(
                    ADMIN_TOKEN,
                    Vec::<String>::new(),
                )]);
            }
        }
    }
    doc
}

// ---------------------------------------------------------------- documents on the wire

fn revision_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .description(Some("The Raft log index of the document's last write."))
        .into()
}

/// A document as read: the document's own fields and its `revision`
/// (a deployment's stays its own: it is the write that made it).
fn with_revision(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut o)) => {
            o.properties
                .entry("revision".into())
                .or_insert_with(|| revision_schema().into());
            if !o.required.iter().any(|r| r == "revision") {
                o.required.push("revision".into());
            }
            RefOr::T(Schema::Object(o))
        }
        RefOr::T(Schema::AllOf(mut all)) => {
            let rev = ObjectBuilder::new()
                .property("revision", revision_schema())
                .required("revision");
            all.items.push(rev.into());
            RefOr::T(Schema::AllOf(all))
        }
        other => RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(other)
                .item(
                    ObjectBuilder::new()
                        .property("revision", revision_schema())
                        .required("revision"),
                )
                .build(),
        )),
    }
}

/// A document as `PUT` takes it: the id may be left to the path, and
/// `kind` and `revision` (as `tollgate apply` and a read write them) are
/// ignored.
fn as_put_body(schema: RefOr<Schema>) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut o)) = schema else {
        return schema;
    };
    o.required.retain(|r| r != "id");
    o.properties.entry("kind".into()).or_insert_with(|| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Ignored (`tollgate apply` writes it)."))
            .into()
    });
    o.properties
        .entry("revision".into())
        .or_insert_with(|| revision_schema().into());
    RefOr::T(Schema::Object(o))
}

fn list_of(record: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .property(
            "items",
            ArrayBuilder::new().items(Ref::from_schema_name(record)),
        )
        .required("items")
        .into()
}

/// Schemas derived from a document type `$doc`: `$record` (as read, with
/// `revision`), and where asked `$list` (`{items: [$record]}`) and `$body`
/// (as PUT takes it).
macro_rules! wire_forms {
    ($doc:ty => record $record:ident $(, list $list:ident)? $(, body $body:ident)?) => {
        pub struct $record;
        impl PartialSchema for $record {
            fn schema() -> RefOr<Schema> {
                with_revision(<$doc as PartialSchema>::schema())
            }
        }
        impl ToSchema for $record {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($record))
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <$doc as ToSchema>::schemas(schemas);
            }
        }
        $(
            pub struct $list;
            impl PartialSchema for $list {
                fn schema() -> RefOr<Schema> {
                    list_of(stringify!($record))
                }
            }
            impl ToSchema for $list {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($list))
                }
                fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                    schemas.push(($record::name().into(), $record::schema()));
                    $record::schemas(schemas);
                }
            }
        )?
        $(
            pub struct $body;
            impl PartialSchema for $body {
                fn schema() -> RefOr<Schema> {
                    as_put_body(<$doc as PartialSchema>::schema())
                }
            }
            impl ToSchema for $body {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($body))
                }
                fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                    <$doc as ToSchema>::schemas(schemas);
                }
            }
        )?
    };
}

use tollgate_model::stages::{Deployment, Stage};
use tollgate_model::{Api, Authorizer, Tenant, UsagePlan};

wire_forms!(Api => record ApiRecord, list ApiList, body ApiBody);
wire_forms!(Authorizer => record AuthorizerRecord, list AuthorizerList, body AuthorizerBody);
wire_forms!(Tenant => record TenantRecord, list TenantList, body TenantBody);
wire_forms!(UsagePlan => record UsagePlanRecord, list UsagePlanList, body UsagePlanBody);
wire_forms!(Stage => record StageRecord, list StageList, body StageBody);
wire_forms!(Deployment => record DeploymentRecord, list DeploymentList);
wire_forms!(crate::service::KeyView => record KeyRecord, list KeyList);
wire_forms!(crate::service::IssuedKey => record IssuedKeyRecord);

// ---------------------------------------------------------------- other answers

/// `DELETE` of a document.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub revision: u64,
}

/// `POST /v1/cluster/members`: the node is a voter.
#[derive(Serialize, ToSchema)]
pub struct MemberAdded {
    pub id: u64,
    pub voter: bool,
}

/// `DELETE /v1/cluster/members/{id}`.
#[derive(Serialize, ToSchema)]
pub struct MemberRemoved {
    pub removed: u64,
}

/// `DELETE /v1/apis/{id}/cache`: every data plane drops the API's cached
/// answers once it has applied `epoch`.
#[derive(Serialize, ToSchema)]
pub struct CacheFlushed {
    pub api: String,
    pub flushed: bool,
    pub epoch: u64,
    pub revision: u64,
}

/// `[[used, remaining], …]`, one pair per UTC day; `remaining` is null
/// without a quota.
type Daily = BTreeMap<String, Vec<(u64, Option<u64>)>>;

/// `GET /v1/usage-plans/{id}/usage`, by key.
#[derive(Serialize, ToSchema)]
pub struct PlanUsage {
    pub plan_id: String,
    pub start: String,
    pub end: String,
    #[schema(value_type = BTreeMap<String, Vec<(u64, Option<u64>)>>)]
    pub items: Daily,
    /// Metered WebSocket message units per day.
    pub messages: BTreeMap<String, Vec<u64>>,
    pub connection_minutes: BTreeMap<String, Vec<u64>>,
}

/// `GET /v1/keys/{id}/usage`, by plan.
#[derive(Serialize, ToSchema)]
pub struct KeyUsage {
    pub key_id: String,
    pub start: String,
    pub end: String,
    #[schema(value_type = BTreeMap<String, Vec<(u64, Option<u64>)>>)]
    pub plans: Daily,
    /// Metered WebSocket message units per day.
    pub messages: BTreeMap<String, Vec<u64>>,
    pub connection_minutes: BTreeMap<String, Vec<u64>>,
}

/// `GET /v1/usage/export?format=json`.
#[derive(Serialize, ToSchema)]
pub struct UsageExport {
    pub rows: Vec<crate::usage::ExportRow>,
}

/// `POST /v1/keys/{id}/quota-adjustments`.
#[derive(Serialize, ToSchema)]
pub struct QuotaAdjusted {
    pub key_id: String,
    pub plan: String,
    pub amount: u64,
    /// The first UTC day of the period the amount is for.
    pub period_start: String,
    pub revision: u64,
}

/// `POST /v1/snapshot`.
#[derive(Serialize, ToSchema)]
pub struct Restored {
    pub restored: bool,
    pub revision: u64,
}
