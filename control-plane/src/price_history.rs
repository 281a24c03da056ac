//! A usage plan's price history, part of `State` (contract §5.6): a price
//! applies from the UTC day it was written, so invoices of past months
//! need every price a plan has had, not only the one in its document.
//!
//! Each write that changes a plan's price (`Command::PutPlan`, whose `day`
//! the receiving node put in the command, so every node records the same)
//! adds a `Counter::Price { plan, from, price }` whose value is the
//! write's revision. Counters already travel in the sled batch, snapshots
//! and backups, so the history survives restarts and restores and is the
//! same on every node, with no storage of its own. A value of 0 is a
//! counter a restore cleared.
//!
//! On a day `d` the price in force is that of the latest write (highest
//! revision, then later `from`) whose `from` is not after `d`: a later
//! write on the same day replaces the earlier one, and a node whose clock
//! lags cannot bring an older price back after a newer one.
//!
//! Deleting a plan keeps its history, so past months can still be invoiced;
//! a plan created again under the same id continues it.

use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_model::billing::Price;
use tollgate_model::usage::{self, Day};
use tollgate_model::{Resource, ResourceKind, UsagePlan};

use super::{Change, Counter, State};

/// One write of a plan's price: `price` (none: the plan stopped being
/// priced) from UTC day `from`, written at revision `written`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRecord {
    pub from: Day,
    pub written: u64,
    pub price: Option<Price>,
}

/// The price in force on `day`, if any.
pub fn price_on(history: &[PriceRecord], day: Day) -> Option<&Price> {
    history
        .iter()
        .filter(|r| r.from <= day)
        .max_by_key(|r| (r.written, r.from))
        .and_then(|r| r.price.as_ref())
}

/// No override: the product's day is the UTC day.
const NO_OVERRIDE: u64 = u64::MAX;
static TEST_TODAY: AtomicU64 = AtomicU64::new(NO_OVERRIDE);

/// The UTC day a price written now applies from.
pub fn price_day() -> Day {
    match TEST_TODAY.load(Ordering::Relaxed) {
        NO_OVERRIDE => usage::today(),
        d => d as Day,
    }
}

/// For tests that must choose the day of a price change (every node in the
/// process); `None` goes back to the UTC day. The product never calls it.
pub fn set_price_day_for_tests(day: Option<Day>) {
    TEST_TODAY.store(day.map_or(NO_OVERRIDE, u64::from), Ordering::Relaxed);
}

impl State {
    /// Every price write of `plan` still in force or in the past. A plan
    /// whose price no write recorded (a restored backup written by hand,
    /// or a plan put before prices existed) has its document's price from
    /// day 0.
    pub fn price_history(&self, plan: &str) -> Vec<PriceRecord> {
        let start = Counter::Price {
            plan: plan.to_string(),
            from: 0,
            price: None,
        };
        let mut out: Vec<PriceRecord> = self
            .counters
            .range(start..)
            .map_while(|(c, v)| match c {
                Counter::Price {
                    plan: p,
                    from,
                    price,
                } if p == plan => Some((*from, *v, price)),
                _ => None,
            })
            .filter(|(_, written, _)| *written > 0)
            .map(|(from, written, price)| PriceRecord {
                from,
                written,
                price: price.clone(),
            })
            .collect();
        if out.is_empty() {
            if let Some(price) = self.document_price(plan) {
                out.push(PriceRecord {
                    from: 0,
                    written: 0,
                    price: Some(price),
                });
            }
        }
        out.sort_by_key(|r| (r.written, r.from));
        out
    }

    fn document_price(&self, plan: &str) -> Option<Price> {
        match self.get(ResourceKind::UsagePlan, plan).map(|s| &s.resource) {
            Some(Resource::UsagePlan(p)) => p.price.clone(),
            _ => None,
        }
    }

    /// Before `plan` is stored at `revision`: record its price from `day`
    /// if it differs from the price last written.
    pub(super) fn record_price(
        &mut self,
        revision: u64,
        plan: &UsagePlan,
        day: Day,
        changes: &mut Vec<Change>,
    ) {
        let history = self.price_history(&plan.id);
        let last = history.last().and_then(|r| r.price.as_ref());
        if last == plan.price.as_ref() {
            return;
        }
        // A price only the document held (from day 0) becomes a record,
        // so the new one does not reach back over it.
        if let [only] = history.as_slice() {
            if only.written == 0 {
                let c = Counter::Price {
                    plan: plan.id.clone(),
                    from: 0,
                    price: only.price.clone(),
                };
                self.bump(c, |_| revision, changes);
            }
        }
        let c = Counter::Price {
            plan: plan.id.clone(),
            from: day,
            price: plan.price.clone(),
        };
        self.bump(c, |_| revision, changes);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;

    fn plan(price: Option<&str>) -> UsagePlan {
        UsagePlan {
            id: "gold".into(),
            apis: Vec::new(),
            throttle: None,
            quota: None,
            price: price.map(|p| Price {
                currency: "USD".into(),
                monthly_fee: "0".into(),
                per_million_requests: p.into(),
                per_million_messages: "0".into(),
                per_million_connection_minutes: "0".into(),
            }),
        }
    }

    fn put(s: &mut State, rev: u64, price: Option<&str>, day: Day) {
        let cmd = Command::PutPlan {
            plan: plan(price),
            day,
        };
        s.apply(rev, cmd).0.unwrap();
    }

    fn on(s: &State, day: Day) -> Option<String> {
        price_on(&s.price_history("gold"), day).map(|p| p.per_million_requests.clone())
    }

    #[test]
    fn invoice_price_history_applies_from_the_day_written() {
        let mut s = State::default();
        put(&mut s, 1, None, 5);
        assert!(s.price_history("gold").is_empty(), "no price, no record");
        put(&mut s, 2, Some("1"), 10);
        put(&mut s, 3, Some("1"), 12); // unchanged: nothing recorded
        put(&mut s, 4, Some("2"), 20);
        put(&mut s, 5, Some("3"), 20); // the same day: the later write wins
        assert_eq!(s.price_history("gold").len(), 3);
        assert_eq!(on(&s, 9), None);
        assert_eq!(on(&s, 10).as_deref(), Some("1"));
        assert_eq!(on(&s, 19).as_deref(), Some("1"));
        assert_eq!(on(&s, 20).as_deref(), Some("3"));
        // A lagging clock cannot bring the older price back.
        put(&mut s, 6, Some("4"), 19);
        assert_eq!(on(&s, 20).as_deref(), Some("4"));
        assert_eq!(on(&s, 18).as_deref(), Some("1"));

        // The history survives a snapshot and the plan's deletion.
        let mut round: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        round
            .apply(7, Command::Delete(ResourceKind::UsagePlan, "gold".into()))
            .0
            .unwrap();
        assert_eq!(round.price_history("gold"), s.price_history("gold"));
    }

    #[test]
    fn invoice_price_history_starts_from_a_restored_documents_price() {
        let mut s = State::default();
        let restore = Command::Restore {
            docs: vec![Resource::UsagePlan(plan(Some("1")))],
            counters: Vec::new(),
        };
        s.apply(1, restore).0.unwrap();
        assert_eq!(on(&s, 0).as_deref(), Some("1"));
        put(&mut s, 2, Some("2"), 30);
        assert_eq!(on(&s, 29).as_deref(), Some("1"));
        assert_eq!(on(&s, 30).as_deref(), Some("2"));
    }
}
