//! The invoice computation over chosen usage and price histories.

use super::*;

fn price(currency: &str, fee: &str, requests: &str) -> Price {
    Price {
        currency: currency.into(),
        monthly_fee: fee.into(),
        per_million_requests: requests.into(),
        per_million_messages: "1.00".into(),
        per_million_connection_minutes: "0.25".into(),
    }
}

fn written(from: Day, rev: u64, p: Price) -> PriceRecord {
    PriceRecord {
        from,
        written: rev,
        price: Some(p),
    }
}

fn march() -> Month {
    Month::parse(Some("2026-03")).unwrap()
}

fn day(d: u32) -> Day {
    usage::from_civil(2026, 3, d).unwrap()
}

fn used(key: &str, plan: &str, d: u32, requests: u64) -> UsageItem {
    UsageItem {
        key: key.into(),
        plan: plan.into(),
        day: day(d),
        counts: UsageCounts::requests(requests),
    }
}

fn holder(id: &str, plans: &[&str]) -> Holder {
    Holder {
        id: id.into(),
        plans: plans.iter().map(|p| p.to_string()).collect(),
        created: 0,
    }
}

fn inputs(keys: Vec<Holder>, usage: Vec<UsageItem>, prices: &[(&str, Vec<PriceRecord>)]) -> Inputs {
    Inputs {
        keys,
        usage,
        prices: prices
            .iter()
            .map(|(p, h)| (p.to_string(), h.clone()))
            .collect(),
    }
}

fn summary(inv: &Invoice) -> Vec<String> {
    inv.lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {:?} {} × {} = {} {} {}..{}",
                l.plan,
                l.key_id.as_deref().unwrap_or("-"),
                l.item,
                l.quantity,
                l.unit_price,
                l.amount,
                l.currency,
                l.from,
                l.to
            )
        })
        .collect()
}

#[test]
fn invoice_rounds_each_line_once_half_up() {
    let i = inputs(
        vec![holder("k1", &["gold"])],
        vec![used("k1", "gold", 3, 333_000), used("k1", "gold", 4, 333)],
        &[("gold", vec![written(0, 1, price("USD", "0", "3.50"))])],
    );
    let inv = compute("acme", march(), &i).unwrap();
    // 333,333 × 3.50 / 10^6 = 1.1666655 → 1.17, once, on the month's sum.
    assert_eq!(
        summary(&inv),
        ["gold k1 Requests 333333 × 3.50 = 1.17 USD 2026-03-01..2026-03-31"]
    );
    assert_eq!(inv.total.as_deref(), Some("1.17"));
    assert_eq!(inv.currency.as_deref(), Some("USD"));
    assert_eq!(inv.rounding, "half_up");
    assert_eq!(inv.month, "2026-03");
    assert!(inv.totals.is_none());
}

#[test]
fn invoice_splits_lines_at_a_mid_month_price_change() {
    let i = inputs(
        vec![holder("k1", &["gold"])],
        vec![
            used("k1", "gold", 2, 1_000_000),
            used("k1", "gold", 15, 2_000_000),
            used("k1", "gold", 16, 500_000),
        ],
        &[(
            "gold",
            vec![
                written(day(1) - 40, 1, price("USD", "10", "2")),
                written(day(16), 9, price("USD", "99", "3")),
            ],
        )],
    );
    let inv = compute("acme", march(), &i).unwrap();
    assert_eq!(
        summary(&inv),
        [
            "gold k1 Requests 3000000 × 2 = 6.00 USD 2026-03-01..2026-03-15",
            "gold k1 Requests 500000 × 3 = 1.50 USD 2026-03-16..2026-03-31",
            // The fee of the month's first price: a change applies next month.
            "gold - MonthlyFee 1 × 10 = 10.00 USD 2026-03-01..2026-03-31",
        ]
    );
    assert_eq!(inv.total.as_deref(), Some("17.50"));
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["lines"][2]["key_id"], serde_json::Value::Null);
    assert_eq!(json["lines"][2]["item"], "monthly_fee");
    assert_eq!(json["lines"][0]["amount"], "6.00");
}

#[test]
fn invoice_starts_at_the_plans_creation_and_bills_each_measure() {
    let mut u = used("k1", "gold", 20, 0);
    u.counts.messages = 2_000_000;
    u.counts.connection_minutes = 10_000;
    let i = inputs(
        vec![holder("k1", &["gold"])],
        vec![u],
        &[("gold", vec![written(day(10), 1, price("USD", "0", "5"))])],
    );
    assert_eq!(
        summary(&compute("acme", march(), &i).unwrap()),
        [
            "gold k1 Messages 2000000 × 1.00 = 2.00 USD 2026-03-10..2026-03-31",
            "gold k1 ConnectionMinutes 10000 × 0.25 = 0.00 USD 2026-03-10..2026-03-31",
        ]
    );
}

#[test]
fn invoice_in_two_currencies_has_totals_by_currency() {
    let i = inputs(
        vec![holder("k1", &["gold"]), holder("k2", &["euro"])],
        vec![
            used("k1", "gold", 1, 1_000_000),
            used("k2", "euro", 1, 1_000_000),
        ],
        &[
            ("gold", vec![written(0, 1, price("USD", "0", "1.5"))]),
            ("euro", vec![written(0, 2, price("EUR", "20", "2.25"))]),
        ],
    );
    let inv = compute("acme", march(), &i).unwrap();
    assert_eq!(inv.currency, None);
    assert_eq!(inv.total, None);
    let totals = inv.totals.clone().unwrap();
    assert_eq!(totals["USD"], "1.50");
    assert_eq!(totals["EUR"], "22.25");
    let json = serde_json::to_value(&inv).unwrap();
    assert!(json.get("currency").is_none() && json.get("total").is_none());
    assert_eq!(json["lines"][0]["currency"], "USD");
    assert_eq!(json["lines"][2]["currency"], "EUR");
}

#[test]
fn invoice_uses_each_currencys_minor_unit() {
    let i = inputs(
        vec![holder("k1", &["yen"]), holder("k2", &["dinar"])],
        vec![
            used("k1", "yen", 1, 1_500_000),
            used("k2", "dinar", 1, 1_234_567),
        ],
        &[
            ("yen", vec![written(0, 1, price("JPY", "1000.4", "3"))]),
            ("dinar", vec![written(0, 2, price("BHD", "0", "0.1"))]),
        ],
    );
    let inv = compute("acme", march(), &i).unwrap();
    assert_eq!(
        summary(&inv),
        [
            // 4.5 yen rounds half up to 5.
            "yen k1 Requests 1500000 × 3 = 5 JPY 2026-03-01..2026-03-31",
            "dinar k2 Requests 1234567 × 0.1 = 0.123 BHD 2026-03-01..2026-03-31",
            "yen - MonthlyFee 1 × 1000.4 = 1000 JPY 2026-03-01..2026-03-31",
        ]
    );
    let totals = inv.totals.unwrap();
    assert_eq!(
        (totals["JPY"].as_str(), totals["BHD"].as_str()),
        ("1005", "0.123")
    );
}

#[test]
fn invoice_fees_go_to_plans_held_and_never_for_zero() {
    let mut late = holder("k3", &["silver"]);
    late.created = day(1) + 31; // created after March: holds nothing then
    let i = inputs(
        vec![
            holder("k1", &["gold"]),
            holder("k2", &["gold", "free"]),
            late,
        ],
        Vec::new(),
        &[
            ("gold", vec![written(0, 1, price("USD", "25", "1"))]),
            ("free", vec![written(0, 2, price("USD", "0", "1"))]),
            ("silver", vec![written(0, 3, price("USD", "5", "1"))]),
        ],
    );
    let inv = compute("acme", march(), &i).unwrap();
    // One fee per plan, whichever number of keys held it.
    assert_eq!(
        summary(&inv),
        ["gold - MonthlyFee 1 × 25 = 25.00 USD 2026-03-01..2026-03-31"]
    );
    // A plan with no price yet, or none at all, bills nothing.
    let bare = inputs(vec![holder("k1", &["gold"])], Vec::new(), &[]);
    let inv = compute("acme", march(), &bare).unwrap();
    assert!(inv.lines.is_empty());
    assert_eq!(inv.total.as_deref(), Some("0"));
}

#[test]
fn invoice_month_is_yyyy_mm() {
    let m = Month::parse(Some("2028-02")).unwrap();
    assert_eq!(m.end - m.start, 29);
    assert_eq!(m.name(), "2028-02");
    for bad in [
        None,
        Some("2026-3"),
        Some("2026-13"),
        Some("26-03"),
        Some("2026-03-01"),
    ] {
        let err = Month::parse(bad).unwrap_err().to_string();
        assert!(err.starts_with("month: "), "{bad:?}: {err}");
    }
}
