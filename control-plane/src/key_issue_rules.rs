//! `POST /v1/keys` with an `Idempotency-Key` (contract §5.2): a write whose
//! answer was lost (a 503, a dropped connection) may be retried with the
//! same header, on any node, within 24 hours, and issues no second key;
//! the retry gets 409 with the first key's id, never its value (which no
//! node kept).
//!
//! The record is a replicated counter, `IssuedWith {idempotency_key,
//! key_id}` = the issue's time in Unix seconds, so it is persisted,
//! snapshotted and backed up with the usage counters, and every node
//! answers alike. A record older than 24 hours (by the new command's
//! time, so every node decides the same) no longer counts.

use tollgate_model::ApiKeyRecord;

use super::{Change, Counter, ErrorCode, Rejection, Resource, State};

/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW_S: u64 = 24 * 3600;

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

impl State {
    /// The key issued with `idempotency_key` within the window before `at`.
    fn issued_with(&self, idempotency_key: &str, at: u64) -> Option<String> {
        let from = Counter::IssuedWith {
            idempotency_key: idempotency_key.to_string(),
            key_id: String::new(),
        };
        self.counters
            .range(from..)
            .take_while(|(c, _)| {
                matches!(c, Counter::IssuedWith { idempotency_key: k, .. } if k == idempotency_key)
            })
            .filter(|(_, when)| **when > 0 && at.saturating_sub(**when) < IDEMPOTENCY_WINDOW_S)
            .find_map(|(c, _)| match c {
                Counter::IssuedWith { key_id, .. } => Some(key_id.clone()),
                _ => None,
            })
    }

    pub(super) fn check_issue_once(
        &self,
        record: &ApiKeyRecord,
        idempotency_key: &str,
    ) -> Result<(), Rejection> {
        if let Some(key_id) = self.issued_with(idempotency_key, record.created_at) {
            return Err(Rejection {
                code: ErrorCode::Conflict,
                message: format!("Idempotency-Key already used: it issued key {key_id:?}"),
                key_id: Some(key_id),
            });
        }
        self.check_key(record)
    }

    pub(super) fn issue_once(
        &mut self,
        revision: u64,
        record: ApiKeyRecord,
        idempotency_key: String,
        changes: &mut Vec<Change>,
    ) -> Option<Resource> {
        let mark = Counter::IssuedWith {
            idempotency_key,
            key_id: record.id.clone(),
        };
        let at = record.created_at;
        self.bump(mark, |_| at.max(1), changes);
        let r = Resource::ApiKey(record);
        self.upsert(revision, r.clone(), changes);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;
    use tollgate_model::{Tenant, UsagePlan};

    fn state_with_plan() -> State {
        let mut s = State::default();
        let tenant = Resource::Tenant(Tenant {
            id: "acme".into(),
            name: "Acme".into(),
        });
        let plan: UsagePlan =
            serde_json::from_value(serde_json::json!({"id": "p", "apis": []})).expect("plan");
        assert!(s.apply(1, Command::Put(tenant)).0.is_ok());
        assert!(s
            .apply(2, Command::Put(Resource::UsagePlan(plan)))
            .0
            .is_ok());
        s
    }

    fn record(id: &str, hash: &str, at: u64) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            tenant: "acme".into(),
            name: String::new(),
            prefix: "tg_x".into(),
            hash: hash.into(),
            plans: vec!["p".into()],
            enabled: true,
            created_at: at,
        }
    }

    fn issue(
        s: &mut State,
        rev: u64,
        r: ApiKeyRecord,
        k: &str,
    ) -> Result<Option<Resource>, Rejection> {
        let cmd = Command::IssueKey {
            record: r,
            idempotency_key: k.into(),
        };
        s.apply(rev, cmd).0
    }

    #[test]
    fn a_retry_within_a_day_names_the_first_key_and_issues_none() {
        let mut s = state_with_plan();
        let t0 = 1_800_000_000;
        assert!(issue(&mut s, 3, record("key-1", "h1", t0), "retry-me").is_ok());
        let again = issue(&mut s, 4, record("key-2", "h2", t0 + 60), "retry-me").unwrap_err();
        assert_eq!(again.code, ErrorCode::Conflict);
        assert_eq!(again.key_id.as_deref(), Some("key-1"));
        assert!(!s.exists(tollgate_model::ResourceKind::ApiKey, "key-2"));
        // Another idempotency key issues its own.
        assert!(issue(&mut s, 5, record("key-3", "h3", t0 + 60), "other").is_ok());
        // A day later the old one no longer counts.
        let later = t0 + IDEMPOTENCY_WINDOW_S;
        assert!(issue(&mut s, 6, record("key-4", "h4", later), "retry-me").is_ok());
        let again = issue(&mut s, 7, record("key-5", "h5", later + 1), "retry-me").unwrap_err();
        assert_eq!(again.key_id.as_deref(), Some("key-4"));
    }

    #[test]
    fn a_refused_issue_records_nothing() {
        let mut s = state_with_plan();
        let mut bad = record("key-1", "h1", 1_800_000_000);
        bad.tenant = "nobody".into();
        let e = issue(&mut s, 3, bad, "k").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(issue(&mut s, 4, record("key-2", "h2", 1_800_000_000), "k").is_ok());
    }
}
