//! The cross-document rules of deployments and stages (contract §5.5), as
//! part of `State::apply`: a stage names an existing API and deployments of
//! that API, defines every variable they use, and claims a path no API or
//! other stage serves; a deployment is a frozen copy of its API made by
//! one write, and cannot go while a stage or canary uses it.

use tollgate_model::stages::{Deployment, Stage};
use tollgate_model::{Resource, ResourceKind};

use super::{Change, ErrorCode, Rejection, State};

impl State {
    fn deployment(&self, id: &str) -> Option<&Deployment> {
        match self.get(ResourceKind::Deployment, id).map(|s| &s.resource) {
            Some(Resource::Deployment(d)) => Some(d),
            _ => None,
        }
    }

    fn stage(&self, id: &str) -> Option<&Stage> {
        match self.get(ResourceKind::Stage, id).map(|s| &s.resource) {
            Some(Resource::Stage(s)) => Some(s),
            _ => None,
        }
    }

    /// The first stage `uses` picks, named for a 409.
    pub(super) fn stage_using(&self, uses: impl Fn(&Stage) -> bool) -> Option<String> {
        self.list(ResourceKind::Stage)
            .find_map(|s| match &s.resource {
                Resource::Stage(st) if uses(st) => Some(format!("stage {:?}", st.id)),
                _ => None,
            })
    }

    pub(super) fn deployments_of(&self, api: &str) -> Vec<String> {
        self.list(ResourceKind::Deployment)
            .filter_map(|s| match &s.resource {
                Resource::Deployment(d) if d.api == api => Some(d.id.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn check_deploy(&self, api: &str) -> Result<(), Rejection> {
        if self.exists(ResourceKind::Api, api) {
            Ok(())
        } else {
            Err(Rejection::new(
                ErrorCode::NotFound,
                format!("api {api:?} not found"),
            ))
        }
    }

    pub(super) fn deploy(
        &mut self,
        revision: u64,
        api: String,
        created_at: String,
        description: String,
        changes: &mut Vec<Change>,
    ) -> Option<Resource> {
        let Some(Resource::Api(document)) = self
            .get(ResourceKind::Api, &api)
            .map(|s| s.resource.clone())
        else {
            unreachable!("checked")
        };
        let r = Resource::Deployment(Deployment {
            id: format!("dep-{revision}"),
            api,
            revision,
            created_at,
            description,
            document,
        });
        self.upsert(revision, r.clone(), changes);
        Some(r)
    }

    /// A stage's deployment (or its canary's, under `field`) must exist and
    /// be of the stage's API.
    fn stage_deployment(
        &self,
        stage: &Stage,
        id: &str,
        field: &str,
    ) -> Result<&Deployment, Rejection> {
        let d = self.deployment(id).ok_or_else(|| {
            Rejection::invalid(format!("{field}: deployment {id:?} does not exist"))
        })?;
        if d.api != stage.api {
            return Err(Rejection::invalid(format!(
                "{field}: deployment {id:?} is of api {:?}, not {:?}",
                d.api, stage.api
            )));
        }
        Ok(d)
    }

    pub(super) fn check_stage(&self, stage: &Stage) -> Result<(), Rejection> {
        if !self.exists(ResourceKind::Api, &stage.api) {
            return Err(Rejection::invalid(format!(
                "api: api {:?} does not exist",
                stage.api
            )));
        }
        let main = self.stage_deployment(stage, &stage.deployment, "deployment")?;
        // Every variable the deployment uses is defined, and the document
        // it makes is valid.
        stage
            .served(&main.document, &stage.variables)
            .map_err(|e| Rejection::invalid(e.to_string()))?;
        if let Some(c) = &stage.canary {
            let canary = self.stage_deployment(stage, &c.deployment, "canary.deployment")?;
            stage
                .served(&canary.document, &stage.canary_variables())
                .map_err(|e| Rejection::invalid(e.within("canary").to_string()))?;
        }
        let r = Resource::Stage(stage.clone());
        self.check_mounts(&r, stage.host_keys(), &stage.base_path)
    }

    pub(super) fn check_promote(&self, stage: &str) -> Result<(), Rejection> {
        match self.stage(stage) {
            None => Err(Rejection::new(
                ErrorCode::NotFound,
                format!("stage {stage:?} not found"),
            )),
            Some(s) if s.canary.is_none() => Err(Rejection::conflict(format!(
                "stage {stage:?} has no canary to promote"
            ))),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn promote(
        &mut self,
        revision: u64,
        stage: &str,
        changes: &mut Vec<Change>,
    ) -> Option<Resource> {
        let mut s = self.stage(stage).cloned().expect("checked");
        let canary = s.canary.take().expect("checked");
        s.variables.extend(canary.variables);
        s.deployment = canary.deployment;
        let r = Resource::Stage(s);
        self.upsert(revision, r.clone(), changes);
        Some(r)
    }
}
