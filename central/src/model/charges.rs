//! Scheduled charges as stored in their contract (`scheduled_charges`; the `ScheduledCharge`
//! response shape), validated by `service::charges`, and what pricing sees of them
//! (`tally_core::charges::ScheduledCharge`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_core::charges::ScheduledCharge;

use super::{InvoiceSchedule, ProductRef};
use crate::wire::{set_opt, Time};

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
        }
    }
}
