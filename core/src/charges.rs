//! Scheduled charges (`metronome-api.md` §3.8), and professional services' scheduled invoices
//! (billed the same way): a contract's fixed charges at instants, each item a `scheduled` line on the SCHEDULED invoice at its timestamp, or on the usage invoice
//! whose period ends at that timestamp when the contract consolidates
//! (`scheduled_charges_on_usage_invoices: ALL`, which moves commit purchases the same way).
//!
//! Invariants:
//! - An item is billed exactly once: on the SCHEDULED invoice at its instant, or (consolidated)
//!   on the one usage invoice whose billed period ends there; never both
//!   ([`ContractSnapshot::usage_period_ending_at`] decides, for charges and purchases alike).
//! - A charge line's total is its item's `amount = quantity × unit_price`, exact; scheduled
//!   lines are never drawn on by commits or credits.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::balances::InvoiceItem;
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::CreditTypeId;
use crate::pricing::ContractSnapshot;

/// A validated scheduled charge: a FIXED product charged at each item's instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledCharge {
    pub id: String,
    pub product_id: String,
    /// Its lines' name: the charge's `name`, or its product's.
    pub name: String,
    pub credit_type: CreditTypeId,
    pub items: Vec<InvoiceItem>,
    /// A professional service's invoiced items (its lines are `ProfessionalService` ones),
    /// not a scheduled charge's.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub professional_service: bool,
}

/// The `scheduled` lines of the items of `charges` at `at_ms`, in charge then item order.
pub fn charge_lines(charges: &[ScheduledCharge], at_ms: i64) -> Vec<InvoiceLine> {
    let mut out = Vec::new();
    for charge in charges {
        for item in charge.items.iter().filter(|i| i.timestamp_ms == at_ms) {
            out.push(InvoiceLine {
                scheduled_charge_id: Some(charge.id.clone()),
                ..InvoiceLine::of_item(
                    match charge.professional_service {
                        true => LineKind::ProfessionalService,
                        false => LineKind::Scheduled,
                    },
                    &charge.product_id,
                    &charge.name,
                    &charge.credit_type,
                    item,
                )
            });
        }
    }
    out
}

/// Every instant an item of `charges` is at (unsorted, with repeats).
pub fn charge_instants(charges: &[ScheduledCharge]) -> impl Iterator<Item = i64> + '_ {
    charges
        .iter()
        .flat_map(|c| c.items.iter().map(|i| i.timestamp_ms))
}

/// The instants of a contract's SCHEDULED invoices given its scheduled charges and the
/// instants of its commit purchases: sorted, without repeats, those consolidated onto a usage
/// invoice left out.
pub fn scheduled_instants(
    contract: &ContractSnapshot,
    charges: &[ScheduledCharge],
    purchases: impl IntoIterator<Item = i64>,
) -> Vec<i64> {
    let mut at: Vec<i64> = charge_instants(charges).chain(purchases).collect();
    at.sort_unstable();
    at.dedup();
    at.retain(|t| contract.usage_period_ending_at(*t).is_none());
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Period;
    use crate::pricing::{price_invoice, price_scheduled, scheduled_instants, PricingSnapshot};
    use crate::time::parse_rfc3339_ms;
    use alloc::vec;
    use rust_decimal::Decimal;

    fn t(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn item(id: &str, at: &str, quantity: &str, unit_price: &str) -> InvoiceItem {
        InvoiceItem {
            id: id.into(),
            timestamp_ms: t(at),
            quantity: d(quantity),
            unit_price: d(unit_price),
            amount: d(quantity) * d(unit_price),
        }
    }

    /// Contract from 2024-09-01, monthly; a setup fee on 09-01 (1 × 5000) and a platform fee of
    /// 3 × 333.33 on 10-01 and on 11-01.
    fn snapshot(consolidate: bool) -> PricingSnapshot {
        let mut s = crate::pricing::tests::snapshot();
        s.contract.starting_at_ms = t("2024-09-01T00:00:00Z");
        s.contract.terms.consolidate_scheduled = consolidate;
        s.contract.terms.scheduled_charges = vec![
            ScheduledCharge {
                id: "setup".into(),
                product_id: "fixed".into(),
                name: "Setup".into(),
                credit_type: CreditTypeId("usd".into()),
                items: vec![item("s0", "2024-09-01T00:00:00Z", "1", "5000")],
                professional_service: false,
            },
            ScheduledCharge {
                id: "platform".into(),
                product_id: "fixed".into(),
                name: "Platform".into(),
                credit_type: CreditTypeId("usd".into()),
                items: vec![
                    item("p0", "2024-10-01T00:00:00Z", "3", "333.33"),
                    item("p1", "2024-11-01T00:00:00Z", "3", "333.33"),
                ],
                professional_service: false,
            },
        ];
        s
    }

    fn period(from: &str, to: &str) -> Period {
        Period {
            start_ms: t(from),
            end_ms: t(to),
        }
    }

    fn summary(inv: &crate::invoice::Invoice) -> Vec<(LineKind, Option<String>, Decimal)> {
        inv.lines
            .iter()
            .map(|l| (l.kind, l.scheduled_charge_id.clone(), l.total.value))
            .collect()
    }

    #[test]
    fn each_item_is_a_scheduled_line_on_the_invoice_at_its_instant() {
        let s = snapshot(false);
        let at = [
            "2024-09-01T00:00:00Z",
            "2024-10-01T00:00:00Z",
            "2024-11-01T00:00:00Z",
        ];
        assert_eq!(scheduled_instants(&s, i64::MAX), at.map(t));
        let oct = price_scheduled(&s, t(at[1])).unwrap();
        assert_eq!(
            summary(&oct),
            [(LineKind::Scheduled, Some("platform".into()), d("999.99"))]
        );
        assert_eq!(
            (oct.lines[0].quantity, oct.lines[0].unit_price.value),
            (d("3"), d("333.33"))
        );
        assert_eq!(oct.total.get(&CreditTypeId("usd".into())), d("999.99"));
        // Never on a usage invoice without consolidation.
        let sept = price_invoice(&s, &[], period(at[0], at[1])).unwrap();
        assert!(sept.lines.is_empty());
    }

    #[test]
    fn consolidated_items_go_on_the_usage_invoice_ending_at_them_once() {
        let s = snapshot(true);
        // 09-01 ends no usage period: it stays a SCHEDULED invoice; 10-01 and 11-01 move.
        assert_eq!(
            scheduled_instants(&s, i64::MAX),
            [t("2024-09-01T00:00:00Z")]
        );
        let sept = price_invoice(
            &s,
            &[],
            period("2024-09-01T00:00:00Z", "2024-10-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            summary(&sept),
            [(LineKind::Scheduled, Some("platform".into()), d("999.99"))]
        );
        assert!(price_scheduled(&s, t("2024-10-01T00:00:00Z"))
            .unwrap()
            .lines
            .is_empty());
        assert_eq!(
            summary(&price_scheduled(&s, t("2024-09-01T00:00:00Z")).unwrap()),
            [(LineKind::Scheduled, Some("setup".into()), d("5000"))]
        );
        // A period starting at the contract's end bills nothing, not the item before it.
        let mut ended = snapshot(true);
        ended.contract.ending_before_ms = Some(t("2024-10-01T00:00:00Z"));
        let after = price_invoice(
            &ended,
            &[],
            period("2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z"),
        )
        .unwrap();
        assert!(after.lines.is_empty(), "{:?}", after.lines);
        // 11-01 is after the end: on no invoice at all (central bills nothing past the end).
        assert_eq!(
            scheduled_instants(&ended, i64::MAX),
            [t("2024-09-01T00:00:00Z"), t("2024-11-01T00:00:00Z")]
        );
    }

    #[test]
    fn a_contract_ending_mid_period_consolidates_at_its_end_and_skips_uninvoiced_periods() {
        let mut s = snapshot(true);
        s.contract.ending_before_ms = Some(t("2024-10-16T00:00:00Z"));
        s.contract.terms.scheduled_charges[1].items[1] =
            item("p1", "2024-10-16T00:00:00Z", "1", "10");
        let oct = price_invoice(
            &s,
            &[],
            period("2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(oct.period.end_ms, t("2024-10-16T00:00:00Z"));
        assert_eq!(
            summary(&oct),
            [(LineKind::Scheduled, Some("platform".into()), d("10"))]
        );
        // September is not invoiced: its end's item stays on a SCHEDULED invoice.
        s.contract.invoice_generation_starting_at_ms = Some(t("2024-10-01T00:00:00Z"));
        assert_eq!(
            scheduled_instants(&s, i64::MAX),
            [t("2024-09-01T00:00:00Z"), t("2024-10-01T00:00:00Z")]
        );
    }
}
