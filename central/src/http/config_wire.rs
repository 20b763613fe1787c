//! Wire types of billing-provider and revenue-system configurations, shared by the customer
//! create handler and the configuration handlers (`billing_configs`). Not a handler module.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{
    AwsRegion, BillingProvider, DeliveryMethod, LegacyBillingConfig, RevenueDeliveryMethod,
    RevenueSystemProvider, StripeCollectionMethod, TaxProvider,
};
use crate::service::billing_configs::{BillingProviderInput, RevenueSystemInput};

/// `CustomerBillingProviderConfigurationCreateCustomerInput` and, with `customer_id`, the set
/// endpoint's `…Input` (customer create ignores a `customer_id`). One type rather than a
/// flattened one, so an error names its field.
#[derive(Deserialize)]
pub struct BillingProviderReq {
    pub customer_id: Option<String>,
    pub billing_provider: BillingProvider,
    pub configuration: Option<Map<String, Value>>,
    pub delivery_method: Option<DeliveryMethod>,
    pub delivery_method_id: Option<String>,
    pub tax_provider: Option<TaxProvider>,
}

impl BillingProviderReq {
    pub fn input(self) -> BillingProviderInput {
        BillingProviderInput {
            billing_provider: self.billing_provider,
            configuration: self.configuration.unwrap_or_default(),
            delivery_method: self.delivery_method,
            delivery_method_id: self.delivery_method_id,
            tax_provider: self.tax_provider,
        }
    }
}

/// `CustomerRevenueSystemConfigurationCreateCustomerInput`.
#[derive(Deserialize)]
pub struct RevenueSystemReq {
    pub provider: RevenueSystemProvider,
    pub configuration: Option<Map<String, Value>>,
    pub delivery_method: Option<RevenueDeliveryMethod>,
    pub delivery_method_id: Option<String>,
}

impl RevenueSystemReq {
    pub fn input(self) -> RevenueSystemInput {
        RevenueSystemInput {
            provider: self.provider,
            configuration: self.configuration.unwrap_or_default(),
            delivery_method: self.delivery_method,
            delivery_method_id: self.delivery_method_id,
        }
    }
}

/// The legacy billing configuration: customer create's `billing_config` (which names its
/// `billing_provider_type`) and the body of `POST /v1/customers/{id}/billing-config/{type}`
/// (whose path does; a type in the body is ignored there).
#[derive(Deserialize)]
pub struct LegacyBillingReq {
    pub billing_provider_type: Option<BillingProvider>,
    pub billing_provider_customer_id: String,
    pub stripe_collection_method: Option<StripeCollectionMethod>,
    pub aws_customer_id: Option<String>,
    pub aws_customer_account_id: Option<String>,
    pub aws_product_code: Option<String>,
    pub aws_region: Option<AwsRegion>,
    pub aws_is_subscription_product: Option<bool>,
}

impl LegacyBillingReq {
    pub fn config(self) -> LegacyBillingConfig {
        LegacyBillingConfig {
            billing_provider_customer_id: self.billing_provider_customer_id,
            stripe_collection_method: self.stripe_collection_method,
            aws_customer_id: self.aws_customer_id,
            aws_customer_account_id: self.aws_customer_account_id,
            aws_product_code: self.aws_product_code,
            aws_region: self.aws_region,
            aws_is_subscription_product: self.aws_is_subscription_product,
        }
    }
}
