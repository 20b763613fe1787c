//! Recurring commits and credits as stored in their contract (`recurring_commits`,
//! `recurring_credits`; the `RecurringCommit` / `RecurringCredit` response shapes), and the
//! commits and credits they generate: one per recurrence period begun by the time of a read
//! (`tally_core::balances::RecurringBalance::expand`), derived on every read and never stored,
//! with deterministic ids (`{recurring id}/{n}`), so a ledger entry or a commit-specific
//! override names the same one every time.

use serde::{Deserialize, Serialize};
use tally_core::balances::{self, RecurringAmount, RecurringBalance};

use super::{
    AccessItem, AccessSchedule, BalanceRateType, BalanceRecord, BillingFrequency, CommitSpecifier,
    Contract, CreditTypeRef, InvoiceItem, InvoiceSchedule, ProductRef, CREATED_BY,
};
use crate::wire::{set_opt, Dec, Time};
use crate::wire_enum;

wire_enum!(Proration {
    None => "NONE",
    First => "FIRST",
    Last => "LAST",
    FirstAndLast => "FIRST_AND_LAST",
});
wire_enum!(ProrationRoundingMethod { HalfUp => "HALF_UP", Floor => "FLOOR", Ceiling => "CEILING" });
wire_enum!(DurationUnit { Periods => "PERIODS" });

impl Proration {
    fn core(self) -> balances::Proration {
        match self {
            Proration::None => balances::Proration::None,
            Proration::First => balances::Proration::First,
            Proration::Last => balances::Proration::Last,
            Proration::FirstAndLast => balances::Proration::FirstAndLast,
        }
    }
}

/// `access_amount` / `invoice_amount`: `unit_price × quantity` per recurrence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecurringAmountRecord {
    pub unit_price: Dec,
    /// Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Dec>,
    pub credit_type_id: String,
}

impl RecurringAmountRecord {
    fn core(&self) -> RecurringAmount {
        RecurringAmount {
            unit_price: self.unit_price.0,
            quantity: self.quantity.map_or(rust_decimal::Decimal::ONE, |q| q.0),
        }
    }
}

/// `commit_duration`: how many recurrence periods each generated one may be drawn on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitDuration {
    pub value: Dec,
    pub unit: DurationUnit,
}

/// A `ProrationRoundingConfig`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProrationRoundingConfig {
    pub rounding_method: ProrationRoundingMethod,
    pub decimal_places: i32,
}

impl ProrationRoundingConfig {
    pub(crate) fn core(self) -> balances::ProrationRounding {
        balances::ProrationRounding {
            method: match self.rounding_method {
                ProrationRoundingMethod::HalfUp => balances::ProrationRoundingMethod::HalfUp,
                ProrationRoundingMethod::Floor => balances::ProrationRoundingMethod::Floor,
                ProrationRoundingMethod::Ceiling => balances::ProrationRoundingMethod::Ceiling,
            },
            decimal_places: self.decimal_places,
        }
    }
}

/// `proration_rounding` (`invoice` on recurring commits only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProrationRoundingRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<ProrationRoundingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<ProrationRoundingConfig>,
}

/// A recurring commit (its generated commits are PREPAID) or credit, validated by
/// `service::recurring` at create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecurringRecord {
    pub id: String,
    /// The FIXED product its generated commits or credits are invoiced with.
    pub product: ProductRef,
    pub access_amount: RecurringAmountRecord,
    /// Recurring commits only: what each recurrence is invoiced (absent: free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_amount: Option<RecurringAmountRecord>,
    pub priority: Dec,
    pub commit_duration: CommitDuration,
    pub starting_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    pub rate_type: BalanceRateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_frequency: Option<BillingFrequency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proration: Option<Proration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proration_rounding: Option<ProrationRoundingRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_product_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specifiers: Option<Vec<CommitSpecifier>>,
    /// Passed down to the generated commits and credits (they roll over at a renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover_fraction: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    pub created_at: Time,
}

impl RecurringRecord {
    /// The `RecurringCommit` / `RecurringCredit` response shape, `contract: {id}` set when
    /// given.
    pub fn api_json(&self, contract_id: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("created_at");
        }
        set_opt(
            &mut v,
            "contract",
            contract_id.map(|id| serde_json::json!({ "id": id })),
        );
        v
    }

    /// What core expands (`credit`: a recurring credit; otherwise a recurring commit).
    pub fn core(&self, credit: bool) -> RecurringBalance {
        let rounding = self.proration_rounding.clone().unwrap_or_default();
        RecurringBalance {
            id: self.id.clone(),
            kind: match credit {
                true => balances::BalanceKind::Credit,
                false => balances::BalanceKind::PrepaidCommit,
            },
            name: self.display_name(),
            product_id: self.product.id.clone(),
            priority: Some(self.priority.0),
            applicable_product_ids: self.applicable_product_ids.clone().unwrap_or_default(),
            applicable_product_tags: self.applicable_product_tags.clone().unwrap_or_default(),
            specifiers: self
                .specifiers
                .iter()
                .flatten()
                .map(CommitSpecifier::core)
                .collect(),
            rate_type: self.rate_type.core(),
            credit_type: tally_core::money::CreditTypeId(self.access_amount.credit_type_id.clone()),
            starting_at_ms: self.starting_at.0,
            ending_before_ms: self.ending_before.map(|t| t.0),
            access_amount: self.access_amount.core(),
            invoice_amount: match credit {
                true => None,
                false => self
                    .invoice_amount
                    .as_ref()
                    .map(RecurringAmountRecord::core),
            },
            commit_duration_periods: duration_periods(self.commit_duration.value),
            recurrence_frequency: self.recurrence_frequency.map(BillingFrequency::core),
            proration: self.proration.map(Proration::core).unwrap_or_default(),
            access_rounding: rounding.access.map(ProrationRoundingConfig::core),
            invoice_rounding: rounding.invoice.map(ProrationRoundingConfig::core),
        }
    }

    fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.product.name.clone())
    }

    /// The commits or credits it generates for the recurrence periods begun before
    /// `until_ms`, as records (each with `recurring_id`).
    pub fn generated(
        &self,
        credit: bool,
        contract: &tally_core::pricing::ContractSnapshot,
        until_ms: i64,
    ) -> Result<Vec<BalanceRecord>, tally_core::rating::RatingError> {
        let mut core = self.core(credit);
        // A contract end moved before the recurring one's cuts its last period.
        if let Some(end) = contract.ending_before_ms {
            core.ending_before_ms = Some(core.ending_before_ms.map_or(end, |e| e.min(end)));
        }
        let expanded = core.expand(contract, until_ms)?;
        Ok(expanded
            .into_iter()
            .map(|b| self.record(credit, b))
            .collect())
    }

    fn record(&self, credit: bool, b: balances::Balance) -> BalanceRecord {
        // Validated at create (`service::recurring`): a known credit type.
        let credit_type =
            |id: &str| super::credit_type(Some(id)).unwrap_or_else(|_| CreditTypeRef::usd());
        let access_schedule = AccessSchedule {
            credit_type: credit_type(&self.access_amount.credit_type_id),
            schedule_items: b
                .access
                .iter()
                .map(|s| AccessItem {
                    id: s.id.clone(),
                    amount: Dec(s.amount),
                    starting_at: Time(s.starting_at_ms),
                    ending_before: Time(s.ending_before_ms),
                })
                .collect(),
        };
        let invoice_schedule = self
            .invoice_amount
            .as_ref()
            .filter(|_| !credit)
            .map(|amount| InvoiceSchedule {
                credit_type: credit_type(&amount.credit_type_id),
                do_not_invoice: false,
                schedule_items: b
                    .invoice_schedule
                    .iter()
                    .map(|i| InvoiceItem {
                        id: i.id.clone(),
                        timestamp: Time(i.timestamp_ms),
                        amount: Dec(i.amount),
                        quantity: Dec(i.quantity),
                        unit_price: Dec(i.unit_price),
                    })
                    .collect(),
            });
        BalanceRecord {
            id: b.id,
            balance_type: match credit {
                true => super::BalanceType::Credit,
                false => super::BalanceType::Prepaid,
            },
            product: self.product.clone(),
            access_schedule,
            invoice_schedule,
            name: self.name.clone(),
            description: self.description.clone(),
            priority: Some(self.priority),
            rate_type: self.rate_type,
            applicable_product_ids: self.applicable_product_ids.clone(),
            applicable_product_tags: self.applicable_product_tags.clone(),
            specifiers: self.specifiers.clone(),
            customer_id: None,
            invoice_contract_id: None,
            applicable_contract_ids: None,
            rollover_fraction: self.rollover_fraction,
            custom_fields: Default::default(),
            netsuite_sales_order_id: self.netsuite_sales_order_id.clone(),
            salesforce_opportunity_id: None,
            created_at: self.created_at,
            created_by: CREATED_BY.into(),
            archived_at: None,
            uniqueness_key: None,
            recurring_id: Some(self.id.clone()),
            rolled_over_from: None,
        }
    }
}

/// `commit_duration.value` as a count of periods (validated at create: a whole number in
/// `1..=MAX_COMMIT_DURATION`).
fn duration_periods(value: Dec) -> u32 {
    use rust_decimal::prelude::ToPrimitive;
    value.0.to_u32().unwrap_or(1).max(1)
}

/// Most periods `commit_duration.value` may span.
pub const MAX_COMMIT_DURATION: u32 = 1_200;

impl Contract {
    /// The commits and credits its recurring ones have generated by `now_ms` (recurrence
    /// periods begun by then, and before the contract stopped billing), commits first.
    pub fn recurrences(&self, now_ms: i64) -> Vec<BalanceRecord> {
        let snapshot = self.snapshot();
        let until = match snapshot.effective_end_ms() {
            Some(end) => end.min(now_ms.saturating_add(1)),
            None => now_ms.saturating_add(1),
        };
        let lists = [
            (false, &self.recurring_commits),
            (true, &self.recurring_credits),
        ];
        let mut out = Vec::new();
        for (credit, list) in lists {
            for r in list {
                match r.generated(credit, &snapshot, until) {
                    Ok(generated) => out.extend(generated),
                    // Amounts are bounded at create so that expanding never overflows.
                    Err(e) => tracing::error!(contract = %self.id, recurring = %r.id, "{e}"),
                }
            }
        }
        out
    }

    /// The ids of its recurring commits, then its recurring credits.
    pub fn recurring_ids(&self) -> impl Iterator<Item = &str> {
        self.recurring_commits
            .iter()
            .chain(&self.recurring_credits)
            .map(|r| r.id.as_str())
    }

    /// Its own commits and credits, generated ones included (as of `now_ms`).
    pub fn own_balance_records(&self, now_ms: i64) -> Vec<BalanceRecord> {
        let mut out: Vec<BalanceRecord> =
            self.commits.iter().chain(&self.credits).cloned().collect();
        out.extend(self.recurrences(now_ms));
        out
    }
}
