//! A tenant's invoice for a UTC month (`GET /v1/tenants/{id}/invoice`,
//! contract §5.6), computed from replicated state only (after a
//! linearizable read), so every node and every restart gives the same one.
//!
//! - Usage lines come from the daily usage counters, which are per key,
//!   plan and day: a key is billed under a plan for exactly the days it
//!   used it, whatever plans it lists now. One line per key, plan, item
//!   (`requests`, `messages` in 32 KiB units, `connection_minutes`) and
//!   price period: the month's days grouped by the price in force
//!   (`price_history.rs`), `from`/`to` the period's first and last day
//!   within the month. Days before the plan's first price (its creation)
//!   and days it had no price bill nothing. A period with no use of an
//!   item has no line for it.
//! - Which keys held a plan in the month: a key of the tenant held it if
//!   it has usage under the plan in the month, or lists it now and was
//!   created by the month's end. Each plan held gets one `monthly_fee`
//!   line (not prorated): the fee of the month's first priced period, so a
//!   fee written mid-month applies from the next month; a fee of `"0"`
//!   makes no line.
//! - Keys are the tenant's keys as stored now: a deleted key's usage can no
//!   longer be attributed to its tenant (disable a key to keep billing it).
//! - Each line's amount is rounded once, half up, to its currency's minor
//!   unit (`tollgate_model::billing`); totals add rounded lines. One
//!   currency: `currency` and `total`; several: `totals` by currency.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_model::billing::{self, Item, Price};
use tollgate_model::usage::{self, Day, UsageCounts, UsageItem};
use tollgate_model::{Resource, ResourceKind};

use crate::service::{ApiError, ControlPlane, Result};
use crate::state::{price_on, PriceRecord, State};

/// An invoice (contract §5.2, §5.6). All amounts and prices are decimal
/// strings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    pub tenant: String,
    /// `YYYY-MM`.
    pub month: String,
    /// The currency of every line, when they share one (absent with none
    /// or several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Always `half_up`: each line is rounded once, half up.
    pub rounding: String,
    pub lines: Vec<InvoiceLine>,
    /// The sum of the lines, when they share one currency (`"0"` with no
    /// lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Sums by currency, when the lines use several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    pub plan: String,
    /// Null for a monthly fee.
    pub key_id: Option<String>,
    pub item: Item,
    /// Units: requests, message units, connection-minutes; 1 for a fee.
    pub quantity: u64,
    /// The plan's price as written: per million units, or the fee.
    pub unit_price: String,
    pub amount: String,
    /// The first and last UTC day (`YYYY-MM-DD`) the line covers.
    pub from: String,
    pub to: String,
    pub currency: String,
}

/// A UTC calendar month: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub start: Day,
    pub end: Day,
}

impl Month {
    /// `YYYY-MM`, or a 400 naming `month`.
    pub fn parse(s: Option<&str>) -> Result<Month> {
        let bad = || {
            ApiError::InvalidArgument(format!(
                "month: {:?} is not a month (YYYY-MM)",
                s.unwrap_or("")
            ))
        };
        let s = s.ok_or_else(bad)?;
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str, n| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(bad());
        }
        let (y, m) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        let start = usage::from_civil(y, m, 1).ok_or_else(bad)?;
        let end = usage::period_end(tollgate_model::QuotaPeriod::Month, start);
        Ok(Month { start, end })
    }

    pub fn name(&self) -> String {
        usage::format_day(self.start)[..7].to_string()
    }

    fn last(&self) -> Day {
        self.end - 1
    }
}

/// A key of the tenant as stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub plans: Vec<String>,
    /// The UTC day it was created.
    pub created: Day,
}

/// Everything an invoice is computed from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub keys: Vec<Holder>,
    /// The tenant's keys' usage in the month, per key, plan and day.
    pub usage: Vec<UsageItem>,
    /// The price history of every plan in `keys` or `usage`.
    pub prices: BTreeMap<String, Vec<PriceRecord>>,
}

impl Inputs {
    /// The tenant's inputs for `month`; `None` for an unknown tenant.
    pub fn gather(state: &State, tenant: &str, month: Month) -> Option<Inputs> {
        state.get(ResourceKind::Tenant, tenant)?;
        let keys: Vec<Holder> = state
            .list(ResourceKind::ApiKey)
            .filter_map(|st| match &st.resource {
                Resource::ApiKey(k) if k.tenant == tenant => Some(Holder {
                    id: k.id.clone(),
                    plans: k.plans.clone(),
                    created: usage::day_of_unix(k.created_at),
                }),
                _ => None,
            })
            .collect();
        let usage: Vec<UsageItem> = keys
            .iter()
            .flat_map(|k| state.used(None, Some(&k.id), month.start, month.end))
            .collect();
        let plans = keys.iter().flat_map(|k| k.plans.iter());
        let prices = plans
            .chain(usage.iter().map(|u| &u.plan))
            .map(|p| (p.clone(), state.price_history(p)))
            .collect();
        Some(Inputs {
            keys,
            usage,
            prices,
        })
    }
}

/// Runs of consecutive days of the month with one price in force: (first
/// day, last day, price).
fn periods(history: &[PriceRecord], month: Month) -> Vec<(Day, Day, Option<&Price>)> {
    let mut out: Vec<(Day, Day, Option<&Price>)> = Vec::new();
    for day in month.start..month.end {
        let price = price_on(history, day);
        match out.last_mut() {
            Some((_, to, p)) if *p == price => *to = day,
            _ => out.push((day, day, price)),
        }
    }
    out
}

fn measure(c: &UsageCounts, item: Item) -> u64 {
    match item {
        Item::Requests => c.requests,
        Item::Messages => c.messages,
        Item::ConnectionMinutes => c.connection_minutes,
        Item::MonthlyFee => 0,
    }
}

fn line(
    plan: &str,
    key: Option<&str>,
    item: Item,
    quantity: u64,
    price: &Price,
    days: (Day, Day),
) -> Result<InvoiceLine> {
    let amount = price.charge(item, quantity).ok_or_else(|| {
        ApiError::Internal(format!(
            "plan {plan:?}: {item:?} amount beyond what can be computed exactly"
        ))
    })?;
    Ok(InvoiceLine {
        plan: plan.to_string(),
        key_id: key.map(str::to_string),
        item,
        quantity,
        unit_price: price.unit_price(item).to_string(),
        amount: amount.to_string(),
        from: usage::format_day(days.0),
        to: usage::format_day(days.1),
        currency: price.currency.clone(),
    })
}

/// One key's lines under one plan: an item's use summed over each price
/// period.
fn usage_lines(
    key: &str,
    plan: &str,
    days: &BTreeMap<Day, UsageCounts>,
    history: &[PriceRecord],
    month: Month,
) -> Result<Vec<InvoiceLine>> {
    let mut out = Vec::new();
    let periods = periods(history, month);
    for item in Item::USAGE {
        for (from, to, price) in &periods {
            let Some(price) = price else { continue };
            let quantity: u64 = days.range(from..=to).map(|(_, c)| measure(c, item)).sum();
            if quantity > 0 {
                out.push(line(plan, Some(key), item, quantity, price, (*from, *to))?);
            }
        }
    }
    Ok(out)
}

/// The invoice of `tenant` for `month` from `inputs`: a pure function.
pub fn compute(tenant: &str, month: Month, inputs: &Inputs) -> Result<Invoice> {
    let none = Vec::new();
    let history = |plan: &str| inputs.prices.get(plan).unwrap_or(&none);
    let mut by_key: BTreeMap<(&str, &str), BTreeMap<Day, UsageCounts>> = BTreeMap::new();
    for u in &inputs.usage {
        let days = by_key.entry((&u.key, &u.plan)).or_default();
        *days.entry(u.day).or_default() += u.counts;
    }
    let mut lines = Vec::new();
    for ((key, plan), days) in &by_key {
        lines.extend(usage_lines(key, plan, days, history(plan), month)?);
    }
    // Plans held in the month: used, or listed by a key created by its end.
    let mut held: Vec<&str> = by_key.keys().map(|(_, plan)| *plan).collect();
    for k in inputs.keys.iter().filter(|k| k.created <= month.last()) {
        held.extend(k.plans.iter().map(String::as_str));
    }
    held.sort_unstable();
    held.dedup();
    for plan in held {
        let periods = periods(history(plan), month);
        let Some(price) = periods.iter().find_map(|(_, _, p)| *p) else {
            continue;
        };
        let fee = billing::parse_amount(&price.monthly_fee).unwrap_or_default();
        if !fee.is_zero() {
            let days = (month.start, month.last());
            lines.push(line(plan, None, Item::MonthlyFee, 1, price, days)?);
        }
    }
    totals(tenant, month, lines)
}

/// The invoice around its lines: sums per currency.
fn totals(tenant: &str, month: Month, lines: Vec<InvoiceLine>) -> Result<Invoice> {
    let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in &lines {
        let amount: Decimal = l
            .amount
            .parse()
            .map_err(|e| ApiError::Internal(format!("line amount {:?}: {e}", l.amount)))?;
        let sum = sums.entry(l.currency.clone()).or_default();
        *sum = sum
            .checked_add(amount)
            .ok_or_else(|| ApiError::Internal("invoice total overflows".into()))?;
    }
    let mut invoice = Invoice {
        tenant: tenant.to_string(),
        month: month.name(),
        currency: None,
        rounding: "half_up".into(),
        lines,
        total: None,
        totals: None,
    };
    let text = |c: &str, d: Decimal| {
        let mut d = d;
        d.rescale(billing::minor_unit(c).unwrap_or(2));
        d.to_string()
    };
    match sums.len() {
        0 => invoice.total = Some("0".into()),
        1 => {
            let (c, d) = sums.into_iter().next().expect("one");
            invoice.total = Some(text(&c, d));
            invoice.currency = Some(c);
        }
        _ => {
            invoice.totals = Some(
                sums.into_iter()
                    .map(|(c, d)| (c.clone(), text(&c, d)))
                    .collect(),
            )
        }
    }
    Ok(invoice)
}

impl ControlPlane {
    /// `GET /v1/tenants/{id}/invoice?month=YYYY-MM`: 400 naming `month`,
    /// 404 for an unknown tenant.
    pub async fn invoice(&self, tenant: &str, month: Option<&str>) -> Result<Invoice> {
        let month = Month::parse(month)?;
        self.read_barrier(false).await?;
        let inputs = self
            .shared
            .read(|s| Inputs::gather(s, tenant, month))
            .ok_or_else(|| ApiError::not_found(ResourceKind::Tenant, tenant))?;
        compute(tenant, month, &inputs)
    }
}

#[cfg(test)]
#[path = "invoice_tests.rs"]
mod tests;
