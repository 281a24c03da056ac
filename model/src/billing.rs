//! Prices on usage plans and the money arithmetic of invoices (contract
//! §5.6).
//!
//! Amounts are decimal strings as operators write them (a JSON number is
//! refused: `3.1` may already have lost its exact value in a parser), kept
//! as written so an invoice shows the very `unit_price` of the plan. All
//! arithmetic is exact (`rust_decimal`, never a float): a line's amount is
//! `quantity × unit_price ÷ 10^6`, computed exactly and rounded once, half
//! up, to the currency's minor unit (ISO 4217: 2 unless the table says
//! otherwise).
//!
//! The deserializer checks only that amounts are strings; their format and
//! the currency are checked by `validate`, so a rule tightened later never
//! makes an old Raft log entry unreadable.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize};

use crate::validate::{Result, ValidationError};

/// At most this many digits before the point, so that `quantity ×
/// unit_price` of any `u64` quantity is exact in an `i128`.
const MAX_INTEGER_DIGITS: usize = 9;
/// At most this many decimals (contract §5.6).
pub const MAX_DECIMALS: usize = 6;

/// A usage plan's price. Amounts per million units, the fee per month.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// An upper-case ISO 4217 code, e.g. `USD`.
    #[schema(example = "USD")]
    pub currency: String,
    /// Charged once per tenant and month the plan was held; `"0"` charges
    /// nothing.
    #[serde(default = "zero", deserialize_with = "decimal_string")]
    #[schema(example = "0", pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$")]
    pub monthly_fee: String,
    #[serde(default = "zero", deserialize_with = "decimal_string")]
    #[schema(example = "3.50", pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$")]
    pub per_million_requests: String,
    /// Per million WebSocket message units (32 KiB each).
    #[serde(default = "zero", deserialize_with = "decimal_string")]
    #[schema(example = "1.00", pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$")]
    pub per_million_messages: String,
    #[serde(default = "zero", deserialize_with = "decimal_string")]
    #[schema(example = "0.25", pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$")]
    pub per_million_connection_minutes: String,
}

fn zero() -> String {
    "0".into()
}

/// A string, and only a string: a JSON number may not be exact.
fn decimal_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a decimal string such as \"3.50\" (a JSON number is refused)")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<String, E> {
            Ok(s.to_string())
        }
    }
    d.deserialize_str(V)
}

/// What an invoice line charges for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Requests,
    Messages,
    ConnectionMinutes,
    MonthlyFee,
}

impl Item {
    /// The metered items, in invoice order.
    pub const USAGE: [Item; 3] = [Item::Requests, Item::Messages, Item::ConnectionMinutes];
}

impl Price {
    /// The amount as written for `item` (per million units; per month for
    /// the fee).
    pub fn unit_price(&self, item: Item) -> &str {
        match item {
            Item::Requests => &self.per_million_requests,
            Item::Messages => &self.per_million_messages,
            Item::ConnectionMinutes => &self.per_million_connection_minutes,
            Item::MonthlyFee => &self.monthly_fee,
        }
    }

    /// Errors name the field within the price (`per_million_requests`);
    /// the plan prefixes `price.`.
    pub fn validate(&self) -> Result {
        minor_unit(&self.currency).map_err(|m| ValidationError::new("currency", m))?;
        let fields = [
            ("monthly_fee", &self.monthly_fee),
            ("per_million_requests", &self.per_million_requests),
            ("per_million_messages", &self.per_million_messages),
            (
                "per_million_connection_minutes",
                &self.per_million_connection_minutes,
            ),
        ];
        for (field, v) in fields {
            parse_amount(v).map_err(|m| ValidationError::new(field, m))?;
        }
        Ok(())
    }

    /// The currency's minor unit (decimals); 2 for a price that never
    /// passed `validate`.
    pub fn minor_unit(&self) -> u32 {
        minor_unit(&self.currency).unwrap_or(2)
    }

    /// What `quantity` of `item` costs, exactly, rounded once half up to
    /// the currency's minor unit. `None` for an amount that is not valid
    /// or a product too large to represent (beyond 10^16 currency units).
    pub fn charge(&self, item: Item, quantity: u64) -> Option<Decimal> {
        // Usage is priced per million units; the fee per month, as is.
        let per = if item == Item::MonthlyFee { 0 } else { 6 };
        charge(quantity, self.unit_price(item), per, self.minor_unit())
    }
}

/// `quantity × unit ÷ 10^per`, rounded half up to `minor` decimals, with
/// exactly `minor` decimals. Exact: the product is an integer in `i128`
/// (at most 2^64 × 10^15) and the division only moves the point.
pub fn charge(quantity: u64, unit: &str, per: u32, minor: u32) -> Option<Decimal> {
    let unit = parse_amount(unit).ok()?;
    let product = i128::from(quantity) * unit.mantissa();
    let exact = Decimal::try_from_i128_with_scale(product, unit.scale() + per).ok()?;
    let mut rounded = exact.round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(minor);
    Some(rounded)
}

/// Zero with the currency's decimals, e.g. `0.00`.
pub fn zero_amount(minor: u32) -> Decimal {
    let mut z = Decimal::ZERO;
    z.rescale(minor);
    z
}

/// A non-negative decimal string: digits, optionally a point and 1 to 6
/// digits (`3.50`, `0`, `12.000001`); no sign, exponent or spaces.
pub fn parse_amount(s: &str) -> std::result::Result<Decimal, String> {
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative: prices are at least 0"));
    }
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(format!(
            "{s:?} is not a decimal string such as \"3.50\" (digits, an optional point and decimals)"
        ));
    }
    if frac.is_some_and(|f| f.len() > MAX_DECIMALS) {
        return Err(format!("{s:?} has more than {MAX_DECIMALS} decimals"));
    }
    if int.len() > MAX_INTEGER_DIGITS {
        return Err(format!(
            "{s:?} has more than {MAX_INTEGER_DIGITS} digits before the point"
        ));
    }
    Decimal::from_str_exact(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The minor unit (decimals) of an ISO 4217 currency code.
pub fn minor_unit(code: &str) -> std::result::Result<u32, String> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{code:?} is not an upper-case ISO 4217 code such as \"USD\""
        ));
    }
    let known = |list: &str| list.split(' ').any(|c| c == code);
    if known(ZERO_DECIMALS) {
        Ok(0)
    } else if known(THREE_DECIMALS) {
        Ok(3)
    } else if known(FOUR_DECIMALS) {
        Ok(4)
    } else if known(TWO_DECIMALS) {
        Ok(2)
    } else {
        Err(format!("{code:?} is not an ISO 4217 currency code"))
    }
}

// ISO 4217 currencies in use, by minor unit (funds and precious metals
// with no minor unit left out: nothing is priced in them).
const ZERO_DECIMALS: &str = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
const THREE_DECIMALS: &str = "BHD IQD JOD KWD LYD OMR TND";
const FOUR_DECIMALS: &str = "CLF UYW";
const TWO_DECIMALS: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB \
BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN \
ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW \
KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN \
NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD \
SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER \
ZAR ZMW ZWG";

#[cfg(test)]
mod tests {
    use super::*;

    fn price(json: &str) -> std::result::Result<Price, String> {
        let p: Price = serde_json::from_str(json).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn billing_amounts_are_strings_with_at_most_six_decimals() {
        let p = price(r#"{"currency":"USD","per_million_requests":"3.50"}"#).unwrap();
        assert_eq!(p.monthly_fee, "0");
        assert_eq!(p.unit_price(Item::Requests), "3.50");
        let err = price(r#"{"currency":"USD","per_million_requests":3.5}"#).unwrap_err();
        assert!(err.contains("a JSON number is refused"), "{err}");
        for (bad, says) in [
            ("-1", "negative"),
            ("1.1234567", "more than 6 decimals"),
            ("1e3", "not a decimal string"),
            (".5", "not a decimal string"),
            ("5.", "not a decimal string"),
            (" 5", "not a decimal string"),
            ("+5", "not a decimal string"),
            ("1234567890", "digits before the point"),
        ] {
            let err = price(&format!(
                r#"{{"currency":"USD","per_million_messages":"{bad}"}}"#
            ))
            .unwrap_err();
            assert!(err.starts_with("per_million_messages: "), "{err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(price(r#"{"currency":"USD","monthly_fee":"999999999.999999"}"#).is_ok());
    }

    #[test]
    fn billing_errors_in_a_plan_name_the_price_field() {
        let plan: crate::UsagePlan = serde_json::from_str(
            r#"{"id":"gold","apis":[],"price":{"currency":"USD","per_million_requests":"1.1234567"}}"#,
        )
        .unwrap();
        let err = plan.validate().unwrap_err();
        assert_eq!(err.field, "price.per_million_requests");
    }

    #[test]
    fn billing_currencies_are_iso_4217_codes_with_their_minor_units() {
        assert_eq!(minor_unit("USD"), Ok(2));
        assert_eq!(minor_unit("JPY"), Ok(0));
        assert_eq!(minor_unit("KRW"), Ok(0));
        assert_eq!(minor_unit("BHD"), Ok(3));
        assert_eq!(minor_unit("KWD"), Ok(3));
        assert_eq!(minor_unit("CLF"), Ok(4));
        assert!(minor_unit("usd").unwrap_err().contains("upper-case"));
        assert!(minor_unit("XYZ").unwrap_err().contains("not an ISO 4217"));
        let err = price(r#"{"currency":"EURO"}"#).unwrap_err();
        assert!(err.starts_with("currency: "), "{err}");
    }

    #[test]
    fn billing_rounds_once_half_up_to_the_minor_unit() {
        let usd = |q, unit| charge(q, unit, 6, 2).unwrap().to_string();
        // 333,333 × 3.50 / 10^6 = 1.1666655
        assert_eq!(usd(333_333, "3.50"), "1.17");
        // Exactly half a cent rounds up: 5,000 × 1 / 10^6 = 0.005.
        assert_eq!(usd(5_000, "1"), "0.01");
        assert_eq!(usd(4_999, "1"), "0.00");
        assert_eq!(usd(0, "3.50"), "0.00");
        // Large but exact; beyond 2^96 units of 10^-12 there is no answer.
        assert_eq!(
            usd(1_000_000_000_000, "999999999.999999"),
            "999999999999999.00"
        );
        assert!(charge(u64::MAX, "999999999.999999", 6, 2).is_none());
        // JPY: no decimals; BHD: three.
        assert_eq!(charge(1_500_000, "3", 6, 0).unwrap().to_string(), "5");
        assert_eq!(charge(1_250_000, "0.1", 6, 3).unwrap().to_string(), "0.125");
        assert_eq!(charge(1_234_567, "0.1", 6, 3).unwrap().to_string(), "0.123");
        // A fee is charged as is, to the minor unit.
        assert_eq!(charge(1, "9.999", 0, 2).unwrap().to_string(), "10.00");
        assert_eq!(charge(1, "20", 0, 2).unwrap().to_string(), "20.00");
        assert_eq!(zero_amount(3).to_string(), "0.000");
    }
}
