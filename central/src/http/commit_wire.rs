//! Wire types of commits and credits as clients give them (`CommitInput`, `CreditInput`, the
//! customer-level create payloads' shared part), used by `contracts/create` and the
//! `customerCommits` / `customerCredits` handlers. Not a handler module. What Tally refuses is
//! checked on the raw body by `service::commits::check_body` first.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use crate::model::{
    BalanceRateType, BalanceType, BillingFrequency, CommitSpecifier, DurationUnit, Proration,
    ProrationRoundingRecord,
};
use crate::service::charges::ChargeInput;
use crate::service::commits::{
    AccessInput, AccessItemInput, BalanceInput, InvoiceInput, InvoiceItemInput, RecurringInput,
};
use crate::service::pro_services::ProServiceInput;
use crate::service::recurring::{
    AmountInput, DurationInput, RecurringInput as RecurringBalanceInput,
};
use crate::wire::{Dec, Time};
use crate::wire_enum;

wire_enum!(CommitType { Prepaid => "PREPAID", Postpaid => "POSTPAID" });

#[derive(Deserialize)]
struct AccessItemReq {
    amount: Dec,
    starting_at: Time,
    ending_before: Time,
}

/// `ScheduleDurationInput`.
#[derive(Deserialize)]
struct AccessReq {
    credit_type_id: Option<String>,
    schedule_items: Vec<AccessItemReq>,
}

#[derive(Deserialize)]
pub struct InvoiceItemReq {
    timestamp: Time,
    amount: Option<Dec>,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
}

/// `SchedulePointInTimeInput`.
#[derive(Deserialize)]
struct InvoiceReq {
    credit_type_id: Option<String>,
    do_not_invoice: Option<bool>,
    #[serde(default)]
    schedule_items: Vec<InvoiceItemReq>,
    recurring_schedule: Option<RecurringReq>,
}

impl InvoiceItemReq {
    pub fn domain(self) -> InvoiceItemInput {
        InvoiceItemInput {
            timestamp: self.timestamp,
            amount: self.amount,
            unit_price: self.unit_price,
            quantity: self.quantity,
        }
    }
}

impl InvoiceReq {
    fn domain(self) -> InvoiceInput {
        InvoiceInput {
            credit_type_id: self.credit_type_id,
            do_not_invoice: self.do_not_invoice.unwrap_or(false),
            schedule_items: self
                .schedule_items
                .into_iter()
                .map(InvoiceItemReq::domain)
                .collect(),
            recurring_schedule: self.recurring_schedule.map(RecurringReq::domain),
        }
    }
}

/// `ScheduledChargeInput`.
#[derive(Deserialize)]
pub struct ScheduledChargeReq {
    product_id: String,
    schedule: Option<InvoiceReq>,
    name: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    netsuite_sales_order_id: Option<String>,
}

impl ScheduledChargeReq {
    pub fn domain(self) -> ChargeInput {
        ChargeInput {
            product_id: self.product_id,
            schedule: self.schedule.map(InvoiceReq::domain),
            name: self.name,
            custom_fields: self.custom_fields,
            netsuite_sales_order_id: self.netsuite_sales_order_id,
        }
    }
}

/// `ProServiceInput` (create and amend).
#[derive(Deserialize)]
pub struct ProServiceReq {
    product_id: String,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
    max_amount: Option<Dec>,
    description: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    netsuite_sales_order_id: Option<String>,
}

impl ProServiceReq {
    pub fn domain(self) -> ProServiceInput {
        ProServiceInput {
            product_id: self.product_id,
            unit_price: self.unit_price,
            quantity: self.quantity,
            max_amount: self.max_amount,
            description: self.description,
            custom_fields: self.custom_fields,
            netsuite_sales_order_id: self.netsuite_sales_order_id,
        }
    }
}

wire_enum!(AmountDistribution {
    Divided => "DIVIDED",
    DividedRounded => "DIVIDED_ROUNDED",
    Each => "EACH",
});
wire_enum!(RecurringFrequency {
    Monthly => "MONTHLY",
    Quarterly => "QUARTERLY",
    SemiAnnual => "SEMI_ANNUAL",
    Annual => "ANNUAL",
});

/// `recurring_schedule` of a `SchedulePointInTimeInput`.
#[derive(Deserialize)]
struct RecurringReq {
    amount_distribution: AmountDistribution,
    frequency: RecurringFrequency,
    starting_at: Time,
    ending_before: Time,
    amount: Option<Dec>,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
}

impl RecurringReq {
    fn domain(self) -> RecurringInput {
        use tally_core::schedule::{Distribution, ScheduleFrequency};
        RecurringInput {
            distribution: match self.amount_distribution {
                AmountDistribution::Divided => Distribution::Divided,
                AmountDistribution::DividedRounded => Distribution::DividedRounded,
                AmountDistribution::Each => Distribution::Each,
            },
            frequency: match self.frequency {
                RecurringFrequency::Monthly => ScheduleFrequency::Monthly,
                RecurringFrequency::Quarterly => ScheduleFrequency::Quarterly,
                RecurringFrequency::SemiAnnual => ScheduleFrequency::SemiAnnual,
                RecurringFrequency::Annual => ScheduleFrequency::Annual,
            },
            starting_at: self.starting_at,
            ending_before: self.ending_before,
            amount: self.amount,
            unit_price: self.unit_price,
            quantity: self.quantity,
        }
    }
}

/// A commit or credit's own fields (contract-level `CommitInput` / `CreditInput`, and what
/// the customer-level create payloads share with them).
#[derive(Deserialize)]
pub struct BalanceReq {
    #[serde(rename = "type")]
    commit_type: Option<CommitType>,
    product_id: String,
    access_schedule: Option<AccessReq>,
    invoice_schedule: Option<InvoiceReq>,
    name: Option<String>,
    description: Option<String>,
    priority: Option<Dec>,
    rate_type: Option<BalanceRateType>,
    applicable_product_ids: Option<Vec<String>>,
    applicable_product_tags: Option<Vec<String>>,
    specifiers: Option<Vec<CommitSpecifier>>,
    rollover_fraction: Option<Dec>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    netsuite_sales_order_id: Option<String>,
    salesforce_opportunity_id: Option<String>,
    temporary_id: Option<String>,
}

impl BalanceReq {
    /// A commit: `type` is required (`at` names the commit in the request, `""` at the top).
    pub fn commit(self, at: &str) -> ApiResult<BalanceInput> {
        let kind = match self.commit_type {
            Some(CommitType::Prepaid) => BalanceType::Prepaid,
            Some(CommitType::Postpaid) => BalanceType::Postpaid,
            None => {
                let field = if at.is_empty() {
                    "type".into()
                } else {
                    format!("{at}.type")
                };
                return Err(ApiError::bad_request(format!(
                    "{field}: required (PREPAID or POSTPAID)"
                )));
            }
        };
        Ok(self.domain(kind))
    }

    pub fn credit(self) -> BalanceInput {
        self.domain(BalanceType::Credit)
    }

    fn domain(self, balance_type: BalanceType) -> BalanceInput {
        BalanceInput {
            balance_type,
            product_id: self.product_id,
            access_schedule: self.access_schedule.map(|a| AccessInput {
                credit_type_id: a.credit_type_id,
                schedule_items: a
                    .schedule_items
                    .into_iter()
                    .map(|i| AccessItemInput {
                        amount: i.amount,
                        starting_at: i.starting_at,
                        ending_before: i.ending_before,
                    })
                    .collect(),
            }),
            invoice_schedule: self.invoice_schedule.map(InvoiceReq::domain),
            name: self.name,
            description: self.description,
            priority: self.priority,
            rate_type: self.rate_type,
            applicable_product_ids: self.applicable_product_ids,
            applicable_product_tags: self.applicable_product_tags,
            specifiers: self.specifiers,
            rollover_fraction: self.rollover_fraction,
            custom_fields: self.custom_fields,
            netsuite_sales_order_id: self.netsuite_sales_order_id,
            salesforce_opportunity_id: self.salesforce_opportunity_id,
            temporary_id: self.temporary_id,
        }
    }
}

/// `commits[i]` of `contracts/create` as the service takes them.
pub fn contract_commits(reqs: Vec<BalanceReq>) -> ApiResult<Vec<BalanceInput>> {
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| r.commit(&format!("commits[{i}]")))
        .collect()
}

/// `access_amount` / `invoice_amount` of a recurring commit or credit.
#[derive(Deserialize)]
struct RecurringAmountReq {
    unit_price: Dec,
    quantity: Option<Dec>,
    credit_type_id: Option<String>,
}

impl RecurringAmountReq {
    fn domain(self) -> AmountInput {
        AmountInput {
            unit_price: self.unit_price,
            quantity: self.quantity,
            credit_type_id: self.credit_type_id,
        }
    }
}

#[derive(Deserialize)]
struct DurationReq {
    value: Dec,
    unit: Option<DurationUnit>,
}

/// `RecurringCommitInput` / `RecurringCreditInput` (what Tally refuses is checked on the raw
/// body by `service::recurring::check_items` first).
#[derive(Deserialize)]
pub struct RecurringBalanceReq {
    product_id: String,
    access_amount: Option<RecurringAmountReq>,
    invoice_amount: Option<RecurringAmountReq>,
    priority: Option<Dec>,
    commit_duration: Option<DurationReq>,
    starting_at: Option<Time>,
    ending_before: Option<Time>,
    rate_type: Option<BalanceRateType>,
    recurrence_frequency: Option<BillingFrequency>,
    proration: Option<Proration>,
    proration_rounding: Option<ProrationRoundingRecord>,
    name: Option<String>,
    description: Option<String>,
    applicable_product_ids: Option<Vec<String>>,
    applicable_product_tags: Option<Vec<String>>,
    specifiers: Option<Vec<CommitSpecifier>>,
    rollover_fraction: Option<Dec>,
    netsuite_sales_order_id: Option<String>,
    temporary_id: Option<String>,
}

impl RecurringBalanceReq {
    pub fn domain(self) -> RecurringBalanceInput {
        RecurringBalanceInput {
            product_id: self.product_id,
            access_amount: self.access_amount.map(RecurringAmountReq::domain),
            invoice_amount: self.invoice_amount.map(RecurringAmountReq::domain),
            priority: self.priority,
            commit_duration: self.commit_duration.map(|d| DurationInput {
                value: d.value,
                unit: d.unit,
            }),
            starting_at: self.starting_at,
            ending_before: self.ending_before,
            rate_type: self.rate_type,
            recurrence_frequency: self.recurrence_frequency,
            proration: self.proration,
            proration_rounding: self.proration_rounding,
            name: self.name,
            description: self.description,
            applicable_product_ids: self.applicable_product_ids,
            applicable_product_tags: self.applicable_product_tags,
            specifiers: self.specifiers,
            rollover_fraction: self.rollover_fraction,
            netsuite_sales_order_id: self.netsuite_sales_order_id,
            temporary_id: self.temporary_id,
        }
    }
}
