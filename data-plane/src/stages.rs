//! Stages on the data plane (contract §5.5).
//!
//! A stage is served as one more compiled API: its deployment's frozen
//! document, at the stage's base path and hosts, with the stage variables
//! laid in, under the API's own id (so the usage plans that grant the API
//! grant its stages, and usage is counted per API as before) but mounted
//! under the key `@{stage}` (no API id has an `@`). A canary is a second
//! compiled document hung on the first; the side is chosen after
//! authentication, so `sticky: key` can use the key.
//!
//! The split holds across data planes without talking to each other: a
//! sticky side is a hash of the stage and the key (or client address) that
//! every data plane computes alike; `none` draws per request, which every
//! data plane does at the same odds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tollgate_model::stages::{Deployment, Stage, Sticky};

pub use crate::router::{CanarySide, StageServing};

/// `deployment` when a stage of `config` serves it (as its own or its
/// canary's).
pub fn served_deployment<'a>(
    config: &'a tollgate_model::ConfigSet,
    deployment: &str,
) -> Option<&'a Deployment> {
    use tollgate_model::{Resource, ResourceKind};
    let used = config.of_kind(ResourceKind::Stage).any(|r| match r {
        Resource::Stage(s) => {
            s.deployment == deployment
                || s.canary
                    .as_ref()
                    .is_some_and(|c| c.deployment == deployment)
        }
        _ => false,
    });
    match config.get(ResourceKind::Deployment, deployment) {
        Some(Resource::Deployment(d)) if used => Some(d),
        _ => None,
    }
}

/// The key a stage is mounted under in the route table.
pub fn route_key(stage: &str) -> String {
    format!("@{stage}")
}

/// The documents a stage serves: its own side and, with a canary, the
/// canary's (the deployments are looked up by id).
pub fn documents<'a>(
    stage: &Stage,
    deployment: impl Fn(&str) -> Option<&'a Deployment>,
) -> Result<(tollgate_model::Api, Option<tollgate_model::Api>), String> {
    let side = |id: &str, vars: &BTreeMap<String, String>| {
        let d = deployment(id).ok_or_else(|| {
            format!(
                "stage {:?}: deployment {id:?} is not in the config",
                stage.id
            )
        })?;
        stage
            .served(&d.document, vars)
            .map_err(|e| format!("stage {:?}: {e}", stage.id))
    };
    let main = side(&stage.deployment, &stage.variables)?;
    let canary = match &stage.canary {
        Some(c) => Some(side(&c.deployment, &stage.canary_variables())?),
        None => None,
    };
    Ok((main, canary))
}

/// Whether this request goes to the canary.
pub fn takes_canary(
    stage: &str,
    canary: &CanarySide,
    key_id: Option<&str>,
    client: IpAddr,
) -> bool {
    if canary.percent <= 0.0 {
        return false;
    }
    if canary.percent >= 100.0 {
        return true;
    }
    let draw = match (canary.sticky, key_id) {
        (Sticky::Key, Some(key)) => unit(stage, key.as_bytes()),
        (Sticky::Ip, _) => unit(stage, client.to_string().as_bytes()),
        // No key to stick to: per request.
        (Sticky::Key | Sticky::None, _) => rand::random::<f64>(),
    };
    draw * 100.0 < canary.percent
}

/// A number in [0, 1) from the stage and `what`, the same on every data
/// plane (FNV-1a: no per-process seed, unlike the std hasher). The stage
/// is mixed in so two stages split the same keys independently.
fn unit(stage: &str, what: &[u8]) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stage.bytes().chain([0]).chain(what.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finish with a mix: FNV's low bits are weak for short inputs.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::CompiledApi;
    use std::sync::Arc;

    fn canary(percent: f64, sticky: Sticky) -> CanarySide {
        let api: tollgate_model::Api = serde_json::from_value(serde_json::json!(
            {"id": "o", "base_path": "/o", "routes": [{"id": "m", "path": "/", "mock": {}}]}))
        .unwrap();
        CanarySide {
            api: Arc::new(CompiledApi::new(api, None).unwrap()),
            percent,
            sticky,
        }
    }

    #[test]
    fn sticky_keys_split_at_the_percent_and_stay_put() {
        let c = canary(10.0, Sticky::Key);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i:016x}")).collect();
        let on: Vec<bool> = keys
            .iter()
            .map(|k| takes_canary("prod", &c, Some(k), ip))
            .collect();
        let share = on.iter().filter(|b| **b).count() as f64 / keys.len() as f64;
        assert!((0.09..=0.11).contains(&share), "{share}");
        // The same answer every time, for every key.
        for (k, side) in keys.iter().zip(&on).take(500) {
            assert_eq!(takes_canary("prod", &c, Some(k), ip), *side);
        }
        // Another stage splits the same keys differently.
        let other: Vec<bool> = keys
            .iter()
            .map(|k| takes_canary("beta", &c, Some(k), ip))
            .collect();
        assert_ne!(on, other);
    }

    #[test]
    fn the_edges_and_the_other_modes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!takes_canary("s", &canary(0.0, Sticky::None), None, ip));
        assert!(takes_canary("s", &canary(100.0, Sticky::None), None, ip));
        let by_ip = canary(50.0, Sticky::Ip);
        let first = takes_canary("s", &by_ip, Some("any"), ip);
        assert!((0..100).all(|_| takes_canary("s", &by_ip, None, ip) == first));
        let per_request = canary(30.0, Sticky::None);
        let n = (0..20_000)
            .filter(|_| takes_canary("s", &per_request, Some("k"), ip))
            .count();
        assert!((5_400..=6_600).contains(&n), "{n}");
    }
}
