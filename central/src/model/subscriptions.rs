//! Subscriptions as stored in their contract (`subscriptions`; the `Subscription` response
//! shape), validated by `service::subscriptions`, and what pricing sees of them
//! (`tally_core::subscriptions::Subscription`).
//!
//! A subscription's quantity is a list of updates in the order they were made, each effective
//! from its `starting_at`: a `quantity` sets it, a `quantity_delta` adds to it. The quantity at
//! an instant is the updates effective by then applied in the order they were made (so a
//! delta sent after a later-dated set still adds to it, as upstream describes:
//! "applied on the effective date based on the order which they are sent").

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_core::subscriptions::{self as core_subs, QuantityStep};

use super::{BillingFrequency, ProductRef, ProrationRoundingConfig};
use crate::wire::{set_opt, Dec, Time};
use crate::wire_enum;

wire_enum!(CollectionSchedule { Advance => "ADVANCE", Arrears => "ARREARS" });
wire_enum!(InvoiceBehavior {
    BillImmediately => "BILL_IMMEDIATELY",
    BillOnNextCollectionDate => "BILL_ON_NEXT_COLLECTION_DATE",
});
wire_enum!(InvoicePlacement {
    OnScheduledInvoice => "ON_SCHEDULED_INVOICE",
    OnUsageInvoice => "ON_USAGE_INVOICE",
});
wire_enum!(QuantityManagementMode { SeatBased => "SEAT_BASED", QuantityOnly => "QUANTITY_ONLY" });

/// `subscription_rate` as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionRateRecord {
    pub billing_frequency: BillingFrequency,
    pub product: ProductRef,
}

/// `proration` as stored (defaults resolved).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionProration {
    pub is_prorated: bool,
    pub invoice_behavior: InvoiceBehavior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<ProrationRoundingConfig>,
}

/// `billing_cycle_config` as stored (defaults resolved).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillingCycleConfig {
    pub anchor_date: Time,
    pub invoice_placement: InvoicePlacement,
}

/// How one update changes the quantity: QUANTITY_ONLY subscriptions set it or add to it;
/// SEAT_BASED ones add and remove seat ids and unassigned seats (`seat_updates`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantityChange {
    Set(Dec),
    Delta(Dec),
    AddSeats(Vec<String>),
    RemoveSeats(Vec<String>),
    AddUnassigned(Dec),
    RemoveUnassigned(Dec),
}

/// The seats of a SEAT_BASED subscription at an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seats {
    pub assigned: std::collections::BTreeSet<String>,
    pub unassigned: Decimal,
}

impl Seats {
    /// Applies one seat change as upstream describes it: new seat ids fill unassigned seats
    /// first and add to the quantity only beyond them; removing an id not assigned, or more
    /// unassigned seats than there are, changes nothing more.
    fn apply(&mut self, change: &QuantityChange) -> Option<()> {
        match change {
            QuantityChange::AddSeats(ids) => {
                let new: std::collections::BTreeSet<&String> = ids
                    .iter()
                    .filter(|id| !self.assigned.contains(*id))
                    .collect();
                let fill = Decimal::from(new.len()).min(self.unassigned);
                self.unassigned -= fill;
                self.assigned.extend(new.into_iter().cloned());
            }
            QuantityChange::RemoveSeats(ids) => {
                for id in ids {
                    self.assigned.remove(id);
                }
            }
            QuantityChange::AddUnassigned(q) => {
                self.unassigned = self.unassigned.checked_add(q.0)?
            }
            QuantityChange::RemoveUnassigned(q) => {
                self.unassigned = (self.unassigned - q.0).max(Decimal::ZERO)
            }
            QuantityChange::Set(_) | QuantityChange::Delta(_) => {}
        }
        Some(())
    }

    pub fn total(&self) -> Decimal {
        Decimal::from(self.assigned.len()) + self.unassigned
    }
}

/// One quantity update (the initial quantity is the first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantityUpdate {
    pub starting_at: Time,
    pub change: QuantityChange,
}

/// A checked update of one subscription (`update_subscriptions`), applied by
/// [`SubscriptionRecord::apply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionUpdate {
    pub subscription_id: String,
    /// `Some(None)`: made open-ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::double_option"
    )]
    pub ending_before: Option<Option<Time>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantity_updates: Vec<QuantityUpdate>,
    /// A new name (its lines' name from then on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl SubscriptionUpdate {
    /// The update as an edit shows it (`SubscriptionsUpdate`: the subscription as `id`).
    pub fn api_json(&self) -> serde_json::Value {
        let updates: Vec<serde_json::Value> = self
            .quantity_updates
            .iter()
            .filter_map(|u| match u.change {
                QuantityChange::Set(q) => {
                    Some(serde_json::json!({ "starting_at": u.starting_at, "quantity": q }))
                }
                QuantityChange::Delta(d) => {
                    Some(serde_json::json!({ "starting_at": u.starting_at, "quantity_delta": d }))
                }
                _ => None,
            })
            .collect();
        let mut seats = serde_json::Map::new();
        for u in &self.quantity_updates {
            let (key, item) = match &u.change {
                QuantityChange::AddSeats(ids) => (
                    "add_seat_ids",
                    serde_json::json!({ "seat_ids": ids, "starting_at": u.starting_at }),
                ),
                QuantityChange::RemoveSeats(ids) => (
                    "remove_seat_ids",
                    serde_json::json!({ "seat_ids": ids, "starting_at": u.starting_at }),
                ),
                QuantityChange::AddUnassigned(q) => (
                    "add_unassigned_seats",
                    serde_json::json!({ "quantity": q, "starting_at": u.starting_at }),
                ),
                QuantityChange::RemoveUnassigned(q) => (
                    "remove_unassigned_seats",
                    serde_json::json!({ "quantity": q, "starting_at": u.starting_at }),
                ),
                _ => continue,
            };
            let list = seats.entry(key).or_insert_with(|| serde_json::json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(item);
            }
        }
        let mut v = serde_json::json!({ "id": self.subscription_id });
        if !updates.is_empty() {
            v["quantity_updates"] = serde_json::Value::Array(updates);
        }
        if !seats.is_empty() {
            v["seat_updates"] = serde_json::Value::Object(seats);
        }
        if let Some(end) = self.ending_before {
            v["ending_before"] = serde_json::json!(end);
        }
        set_opt(&mut v, "name", self.name.as_ref());
        v
    }
}

/// A subscription of a contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub id: String,
    pub subscription_rate: SubscriptionRateRecord,
    /// The product's tags when the subscription was made (overrides may target them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub collection_schedule: CollectionSchedule,
    pub proration: SubscriptionProration,
    pub quantity_management_mode: QuantityManagementMode,
    /// SEAT_BASED: the event property naming a seat (`seat_config.seat_group_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_group_key: Option<String>,
    /// In the order made; the first are the initial quantity (or seats) at `starting_at`.
    pub quantity_updates: Vec<QuantityUpdate>,
    pub starting_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    pub billing_cycle_config: BillingCycleConfig,
    pub fiat_credit_type_id: String,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
}

impl SubscriptionRecord {
    /// Applies a checked update.
    pub fn apply(&mut self, update: &SubscriptionUpdate) {
        if let Some(end) = update.ending_before {
            self.ending_before = end;
        }
        if let Some(name) = &update.name {
            self.name = Some(name.clone());
        }
        self.quantity_updates
            .extend(update.quantity_updates.iter().cloned());
    }

    /// The seats at `t_ms` of a SEAT_BASED subscription: its seat changes effective by then,
    /// in time order (changes at one instant in the order made).
    pub fn seats_at(&self, t_ms: i64) -> Option<Seats> {
        let mut changes: Vec<&QuantityUpdate> = self
            .quantity_updates
            .iter()
            .filter(|u| u.starting_at.0 <= t_ms)
            .collect();
        changes.sort_by_key(|u| u.starting_at.0);
        let mut seats = Seats::default();
        for u in changes {
            seats.apply(&u.change)?;
        }
        Some(seats)
    }

    /// The quantity at `t_ms` (see the module docs; SEAT_BASED: assigned plus unassigned
    /// seats); `None` if an update overflows.
    pub fn quantity_at(&self, t_ms: i64) -> Option<Decimal> {
        if self.quantity_management_mode == QuantityManagementMode::SeatBased {
            return self.seats_at(t_ms).map(|s| s.total());
        }
        let mut q = Decimal::ZERO;
        for u in self
            .quantity_updates
            .iter()
            .filter(|u| u.starting_at.0 <= t_ms)
        {
            q = match &u.change {
                QuantityChange::Set(v) => v.0,
                QuantityChange::Delta(d) => q.checked_add(d.0)?,
                _ => q,
            };
        }
        Some(q)
    }

    /// The instants where the quantity may change, sorted, without repeats.
    fn breakpoints(&self) -> Vec<i64> {
        let mut at: Vec<i64> = self
            .quantity_updates
            .iter()
            .map(|u| u.starting_at.0)
            .collect();
        at.sort_unstable();
        at.dedup();
        at
    }

    /// `(from, quantity)` at each instant the quantity changes (the first at `starting_at`),
    /// adjacent equal quantities merged; `None` if an update overflows.
    pub fn quantity_steps(&self) -> Option<Vec<QuantityStep>> {
        let mut out: Vec<QuantityStep> = Vec::new();
        for at in self.breakpoints() {
            let quantity = self.quantity_at(at)?;
            if out.last().is_none_or(|l| l.quantity != quantity) {
                out.push(QuantityStep {
                    starting_at_ms: at,
                    quantity,
                });
            }
        }
        Some(out)
    }

    /// What pricing sees of it.
    pub fn core(&self) -> Option<core_subs::Subscription> {
        Some(core_subs::Subscription {
            id: self.id.clone(),
            product_id: self.subscription_rate.product.id.clone(),
            name: self
                .name
                .clone()
                .unwrap_or_else(|| self.subscription_rate.product.name.clone()),
            product_tags: self.product_tags.clone(),
            billing_frequency: self.subscription_rate.billing_frequency.core(),
            collection: match self.collection_schedule {
                CollectionSchedule::Advance => core_subs::Collection::Advance,
                CollectionSchedule::Arrears => core_subs::Collection::Arrears,
            },
            is_prorated: self.proration.is_prorated,
            invoice_behavior: match self.proration.invoice_behavior {
                InvoiceBehavior::BillImmediately => core_subs::InvoiceBehavior::BillImmediately,
                InvoiceBehavior::BillOnNextCollectionDate => {
                    core_subs::InvoiceBehavior::BillOnNextCollectionDate
                }
            },
            rounding: self.proration.rounding.map(ProrationRoundingConfig::core),
            starting_at_ms: self.starting_at.0,
            ending_before_ms: self.ending_before.map(|t| t.0),
            anchor_ms: self.billing_cycle_config.anchor_date.0,
            placement: match self.billing_cycle_config.invoice_placement {
                InvoicePlacement::OnUsageInvoice => core_subs::Placement::OnUsageInvoice,
                InvoicePlacement::OnScheduledInvoice => core_subs::Placement::OnScheduledInvoice,
            },
            quantities: self.quantity_steps()?,
        })
    }

    /// The `Subscription` response shape as of `now_ms`: `quantity_schedule` holds the quantity
    /// in effect now and the changes after it; `billing_periods` the previous, current and next
    /// periods around now (those that exist; none without the `contract`, as an edit's record
    /// shows it).
    pub fn api_json(
        &self,
        contract: Option<&tally_core::pricing::ContractSnapshot>,
        now_ms: i64,
    ) -> serde_json::Value {
        let steps = self.quantity_steps().unwrap_or_default();
        let end = self.ending_before.map(|t| t.0);
        let current = steps
            .iter()
            .rposition(|s| s.starting_at_ms <= now_ms)
            .unwrap_or(0);
        let schedule: Vec<serde_json::Value> = steps
            .iter()
            .enumerate()
            .skip(current)
            .map(|(i, s)| {
                let mut v = serde_json::json!({
                    "quantity": Dec(s.quantity),
                    "starting_at": Time(s.starting_at_ms),
                });
                let until = steps.get(i + 1).map(|n| n.starting_at_ms).or(end);
                set_opt(&mut v, "ending_before", until.map(Time));
                v
            })
            .collect();
        let mut periods = serde_json::Map::new();
        if let (Some(sub), Some(contract)) = (self.core(), contract) {
            let around = sub.billing_periods(contract, now_ms, now_ms);
            let current = around.iter().position(|p| p.contains(now_ms));
            let prev = sub.billing_periods(contract, self.starting_at.0, now_ms);
            let period_json = |p: &tally_core::period::Period| {
                serde_json::json!({
                    "starting_at": Time(p.start_ms),
                    "ending_before": Time(p.end_ms),
                })
            };
            if let Some(c) = current.map(|i| around[i]) {
                periods.insert("current".into(), period_json(&c));
                if let Some(p) = prev.iter().rev().find(|p| p.end_ms <= c.start_ms) {
                    periods.insert("previous".into(), period_json(p));
                }
                let next = sub.billing_periods(contract, c.end_ms + 1, c.end_ms);
                if let Some(n) = next.iter().find(|p| p.start_ms == c.end_ms) {
                    periods.insert("next".into(), period_json(n));
                }
            } else if let Some(p) = prev.last().filter(|p| p.end_ms <= now_ms) {
                periods.insert("previous".into(), period_json(p));
            } else if let Some(n) = around.first().filter(|p| p.start_ms > now_ms) {
                periods.insert("next".into(), period_json(n));
            }
        }
        let mut v = serde_json::json!({
            "id": self.id,
            "subscription_rate": self.subscription_rate,
            "collection_schedule": self.collection_schedule,
            "proration": self.proration,
            "quantity_management_mode": self.quantity_management_mode,
            "quantity_schedule": schedule,
            "billing_periods": periods,
            "starting_at": self.starting_at,
            "billing_cycle_config": self.billing_cycle_config,
            "fiat_credit_type_id": self.fiat_credit_type_id,
            "custom_fields": self.custom_fields,
        });
        set_opt(&mut v, "ending_before", self.ending_before);
        set_opt(&mut v, "name", self.name.as_ref());
        set_opt(&mut v, "description", self.description.as_ref());
        if let Some(key) = &self.seat_group_key {
            v["seat_config"] = serde_json::json!({ "seat_group_key": key });
        }
        v
    }
}
