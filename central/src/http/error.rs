//! The one error type handlers return: Metronome's `{"message": ...}` with the right status, and
//! the only place a domain error (`service::*`, `billing`, `store`) becomes a status.
//!
//! Deterministic client errors carry `x-should-retry: false` so the SDKs do not retry them.
//! Database failures become a generic 5xx; their detail goes to the log only.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::billing::BillingError;
use crate::model::LoadError;
use crate::service::alerts::AlertError;
use crate::service::balances::BalanceError;
use crate::service::billing_configs::BillingConfigError;
use crate::service::commits::CommitError;
use crate::service::contracts::ContractError;
use crate::service::credit_types::CreditTypeError;
use crate::service::customers::CustomerError;
use crate::service::ingest::IngestError;
use crate::service::invoices::InvoiceError;
use crate::service::jobs::JobError;
use crate::service::metrics::MetricError;
use crate::service::products::ProductError;
use crate::service::rate_cards::RateCardError;
use crate::service::usage::UsageError;
use crate::service::webhooks::WebhookError;
use crate::service::Invalid;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid API token")
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
            }
            StoreError::Contended(m) => {
                tracing::warn!(error = %m, "transaction contended past its retries");
                ApiError::conflict("the resource is being changed concurrently; retry")
            }
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service is temporarily unavailable; retry later",
                )
            }
            StoreError::Corrupt(m) => ApiError::internal(format!("corrupt stored data: {m}")),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => ApiError::not_found(what),
            LoadError::Store(e) => e.into(),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::NotFound(what) => ApiError::not_found(what),
            BillingError::Rating(m) => ApiError::internal(m),
            BillingError::Store(e) => e.into(),
        }
    }
}

impl From<MetricError> for ApiError {
    fn from(e: MetricError) -> Self {
        match e {
            MetricError::NotFound => ApiError::not_found("billable metric"),
            MetricError::Invalid(e) => e.into(),
            MetricError::Store(e) => e.into(),
        }
    }
}

impl From<ProductError> for ApiError {
    fn from(e: ProductError) -> Self {
        match e {
            ProductError::NotFound(what) => ApiError::not_found(what),
            ProductError::Invalid(e) => e.into(),
            ProductError::Store(e) => e.into(),
        }
    }
}

impl From<RateCardError> for ApiError {
    fn from(e: RateCardError) -> Self {
        match e {
            RateCardError::NotFound(what) => ApiError::not_found(what),
            RateCardError::Invalid(e) => e.into(),
            RateCardError::Store(e) => e.into(),
            RateCardError::AtIndex { index, source } => {
                let inner = ApiError::from(*source);
                ApiError::new(inner.status, format!("rates[{index}]: {}", inner.message))
            }
        }
    }
}

impl From<CreditTypeError> for ApiError {
    fn from(e: CreditTypeError) -> Self {
        match e {
            CreditTypeError::NotFound(what) => ApiError::not_found(what),
            CreditTypeError::Invalid(e) => e.into(),
            e @ CreditTypeError::NameTaken(_) => ApiError::conflict(e.to_string()),
            CreditTypeError::Store(e) => e.into(),
        }
    }
}

impl From<CustomerError> for ApiError {
    fn from(e: CustomerError) -> Self {
        match e {
            CustomerError::NotFound => ApiError::not_found("customer"),
            CustomerError::Invalid(e) => e.into(),
            CustomerError::Conflict(m) => ApiError::conflict(m),
            CustomerError::Store(e) => e.into(),
        }
    }
}

impl From<BillingConfigError> for ApiError {
    fn from(e: BillingConfigError) -> Self {
        match e {
            e @ BillingConfigError::UnknownCustomer(_) => ApiError::bad_request(e.to_string()),
            BillingConfigError::NotFound(what) => ApiError::not_found(what),
            BillingConfigError::Invalid(e) => e.into(),
            BillingConfigError::Store(e) => e.into(),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::NotFound(what) => ApiError::not_found(what),
            CommitError::Invalid(e) => e.into(),
            e @ CommitError::UniquenessKeyUsed => ApiError::conflict(e.to_string()),
            CommitError::Store(e) => e.into(),
        }
    }
}

impl From<ContractError> for ApiError {
    fn from(e: ContractError) -> Self {
        match e {
            ContractError::NotFound(what) => ApiError::not_found(what),
            e @ ContractError::NoRateCardWithAlias(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            ContractError::Invalid(e) => e.into(),
            e @ ContractError::UniquenessKeyUsed => ApiError::conflict(e.to_string()),
            ContractError::Store(e) => e.into(),
            ContractError::Invoice(e) => e.into(),
            ContractError::BillingConfig(e) => e.into(),
            ContractError::RateCard(e) => e.into(),
            ContractError::Rating(m) => ApiError::internal(m),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(e) => e.into(),
            IngestError::Store(e) => e.into(),
        }
    }
}

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::NotFound(what) => ApiError::not_found(what),
            AlertError::Invalid(e) => e.into(),
            AlertError::Conflict(m) => ApiError::conflict(m),
            AlertError::Billing(e) => e.into(),
            AlertError::Store(e) => e.into(),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound(what) => ApiError::not_found(what),
            WebhookError::Invalid(e) => e.into(),
            WebhookError::Store(e) => e.into(),
        }
    }
}

impl From<InvoiceError> for ApiError {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::NotFound(what) => ApiError::not_found(what),
            InvoiceError::Invalid(e) => e.into(),
            InvoiceError::Conflict(m) => ApiError::conflict(m),
            InvoiceError::Billing(e) => e.into(),
            InvoiceError::Store(e) => e.into(),
        }
    }
}

impl From<crate::service::events::SearchError> for ApiError {
    fn from(e: crate::service::events::SearchError) -> Self {
        match e {
            crate::service::events::SearchError::Invalid(e) => e.into(),
            crate::service::events::SearchError::Store(e) => e.into(),
        }
    }
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::NotFound(what) => ApiError::not_found(what),
            UsageError::Invalid(e) => e.into(),
            e @ UsageError::Overflow => {
                ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            UsageError::Invoice(e) => e.into(),
            UsageError::Store(e) => e.into(),
        }
    }
}

impl From<BalanceError> for ApiError {
    fn from(e: BalanceError) -> Self {
        match e {
            BalanceError::NotFound(what) => ApiError::not_found(what),
            BalanceError::Invalid(e) => e.into(),
            BalanceError::Billing(e) => e.into(),
            BalanceError::Store(e) => e.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retryable = self.status.is_server_error()
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::REQUEST_TIMEOUT;
        let mut res = (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response();
        let flag = if retryable { "true" } else { "false" };
        res.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static(flag));
        res
    }
}
