//! Scheduled charges as stored in their contract (`scheduled_charges`; the `ScheduledCharge`
//! response shape), validated by `service::charges`, and what pricing sees of them
//! (`tally_core::charges::ScheduledCharge`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_core::charges::ScheduledCharge;

use super::{InvoiceItem, InvoiceSchedule, ProductRef};
use crate::wire::{set_opt, Dec, Time};

/// A scheduled charge: a FIXED product charged at each item of its schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduledChargeRecord {
    pub id: String,
    pub product: ProductRef,
    pub schedule: InvoiceSchedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl ScheduledChargeRecord {
    /// The `ScheduledCharge` response shape.
    pub fn api_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "product": self.product,
            "schedule": self.schedule,
            "custom_fields": self.custom_fields,
        });
        set_opt(&mut v, "name", self.name.as_ref());
        set_opt(
            &mut v,
            "netsuite_sales_order_id",
            self.netsuite_sales_order_id.as_ref(),
        );
        set_opt(&mut v, "archived_at", self.archived_at);
        v
    }

    /// What pricing sees of it: its items, none when `do_not_invoice`.
    pub fn core(&self) -> ScheduledCharge {
        let items = match self.schedule.do_not_invoice {
            true => Vec::new(),
            false => self.schedule.core_items(),
        };
        ScheduledCharge {
            id: self.id.clone(),
            product_id: self.product.id.clone(),
            name: self
                .name
                .clone()
                .unwrap_or_else(|| self.product.name.clone()),
            credit_type: tally_core::money::CreditTypeId(self.schedule.credit_type.id.clone()),
            items,
            professional_service: false,
        }
    }
}

/// A professional service of a contract (`ProService`): a PRO_SERVICE product the contract may
/// invoice up to `max_amount` of, through `scheduleProServicesInvoice`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProServiceRecord {
    pub id: String,
    pub product_id: String,
    pub unit_price: Dec,
    pub quantity: Dec,
    pub max_amount: Dec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    /// The product's name at create: what its invoice lines are called without a description.
    pub product_name: String,
}

impl ProServiceRecord {
    /// The `ProService` response shape.
    pub fn api_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("product_name");
        }
        v
    }
}

/// One line of a scheduled professional-services invoice: `quantity × unit_price = amount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProServiceItem {
    pub id: String,
    pub professional_service_id: String,
    pub quantity: Dec,
    pub unit_price: Dec,
    pub amount: Dec,
}

/// A professional-services invoice scheduled at `issued_at` (`scheduleProServicesInvoice`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProServiceInvoiceRecord {
    pub id: String,
    pub issued_at: Time,
    pub items: Vec<ProServiceItem>,
}

/// What pricing sees of a contract's professional services: one charge per service holding
/// every item scheduled for it.
pub fn pro_service_charges(
    services: &[ProServiceRecord],
    invoices: &[ProServiceInvoiceRecord],
) -> Vec<ScheduledCharge> {
    services
        .iter()
        .map(|s| ScheduledCharge {
            id: s.id.clone(),
            product_id: s.product_id.clone(),
            name: s
                .description
                .clone()
                .unwrap_or_else(|| s.product_name.clone()),
            credit_type: tally_core::money::CreditTypeId(super::USD_ID.into()),
            items: invoices
                .iter()
                .flat_map(|inv| inv.items.iter().map(move |i| (inv.issued_at, i)))
                .filter(|(_, i)| i.professional_service_id == s.id)
                .map(|(at, i)| tally_core::balances::InvoiceItem {
                    id: i.id.clone(),
                    timestamp_ms: at.0,
                    quantity: i.quantity.0,
                    unit_price: i.unit_price.0,
                    amount: i.amount.0,
                })
                .collect(),
            professional_service: true,
        })
        .collect()
}

/// One `update_scheduled_charges` entry of a v2 edit as recorded: the items it adds (ids
/// assigned), the ids of those it removes and the items it rewrites (whole, as validated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeScheduleUpdate {
    pub scheduled_charge_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_schedule_items: Vec<InvoiceItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_schedule_items: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_schedule_items: Vec<InvoiceItem>,
}

impl ChargeScheduleUpdate {
    /// `ContractEdit`'s `ScheduledChargeUpdate` shape.
    pub fn api_json(&self) -> serde_json::Value {
        let removed: Vec<_> = self
            .remove_schedule_items
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        serde_json::json!({
            "id": self.scheduled_charge_id,
            "invoice_schedule": {
                "add_schedule_items": self.add_schedule_items,
                "update_schedule_items": self.update_schedule_items,
                "remove_schedule_items": removed,
            },
        })
    }
}
