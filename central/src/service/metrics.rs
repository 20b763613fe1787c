//! Billable metrics: create, get, list, archive. A metric never changes once created (archiving
//! only hides it from lists; it keeps metering), which is what lets ingest cache definitions.

use std::collections::BTreeMap;

use tally_core::metric::{EventTypeFilter, PropertyFilter};
use tally_core::sql_metric::SqlMetric;

use super::{modify_doc, require_text, Invalid, SeqPage, Write};
use crate::model::{decode, encode, kind, load, new_id, AggregationType, LoadError, Metric};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq, StoreError};
use crate::wire::Time;
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("billable metric not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for MetricError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(_) => MetricError::NotFound,
            LoadError::Store(e) => MetricError::Store(e),
        }
    }
}

/// Most group keys one metric may have.
pub const MAX_GROUP_KEYS: usize = 20;
/// Most properties one (compound) group key may name.
pub const MAX_GROUP_KEY_PROPERTIES: usize = 10;
/// Most property filters one metric may have.
pub const MAX_PROPERTY_FILTERS: usize = 50;

/// Refuses a metric past the configuration limits (each event's grain carries one value per
/// distinct group-key property, so these bound what every ingest and draft read costs).
fn check_limits(req: &NewMetric) -> Result<(), Invalid> {
    if req.group_keys.len() > MAX_GROUP_KEYS {
        return Err(Invalid(format!(
            "group_keys: at most {MAX_GROUP_KEYS} group keys are allowed"
        )));
    }
    if req
        .group_keys
        .iter()
        .any(|k| k.len() > MAX_GROUP_KEY_PROPERTIES)
    {
        return Err(Invalid(format!(
            "group_keys: a group key names at most {MAX_GROUP_KEY_PROPERTIES} properties"
        )));
    }
    if req.property_filters.len() > MAX_PROPERTY_FILTERS {
        return Err(Invalid(format!(
            "property_filters: at most {MAX_PROPERTY_FILTERS} property filters are allowed"
        )));
    }
    Ok(())
}

/// A metric as a client asks for it.
pub struct NewMetric {
    pub name: String,
    pub aggregation_type: Option<AggregationType>,
    pub aggregation_key: Option<String>,
    pub event_type_filter: Option<EventTypeFilter>,
    pub property_filters: Vec<PropertyFilter>,
    pub group_keys: Vec<Vec<String>>,
    pub custom_fields: BTreeMap<String, String>,
    pub sql: Option<String>,
}

/// Validates and stores a metric; it meters every event that arrives after this returns.
pub async fn create(st: &AppState, env: Env, req: NewMetric) -> Result<String, MetricError> {
    require_text("name", &req.name, 256)?;
    check_limits(&req)?;
    let metric = match req.sql {
        Some(_) => sql_metric(req)?,
        None => simple_metric(req)?,
    };
    let doc = NewDoc {
        kind: kind::METRIC,
        id: &metric.id,
        parent_id: None,
        unique_key: None,
        created_ms: st.now_ms(),
        body: encode(&metric)?,
    };
    st.stores.config.insert_docs(env, &[doc]).await?;
    st.invalidate_metrics(env).await;
    Ok(metric.id)
}

/// A metric that meters matching events as they arrive.
fn simple_metric(req: NewMetric) -> Result<Metric, MetricError> {
    let aggregation_type = req
        .aggregation_type
        .ok_or_else(|| Invalid("aggregation_type is required unless sql is given".into()))?;
    if aggregation_type == AggregationType::CustomSql {
        return Err(Invalid(
            "aggregation_type custom_sql is not given: a metric with sql is custom_sql".into(),
        )
        .into());
    }
    let metric = Metric {
        id: new_id(),
        name: req.name,
        aggregation_type,
        // COUNT ignores any aggregation key; keeping it would suggest otherwise.
        aggregation_key: req
            .aggregation_key
            .filter(|_| aggregation_type != AggregationType::Count),
        event_type_filter: req.event_type_filter,
        property_filters: req.property_filters,
        group_keys: req.group_keys,
        custom_fields: req.custom_fields,
        archived_at: None,
        sql: None,
    };
    metric
        .def()
        .validate()
        .map_err(|e| Invalid(e.to_string()))?;
    Ok(metric)
}

/// An SQL billable metric: its query is validated and compiled here (and again wherever it is
/// evaluated); its one group key is the query's group columns, in SELECT order.
fn sql_metric(req: NewMetric) -> Result<Metric, MetricError> {
    let mut given = Vec::new();
    if req.aggregation_type.is_some() {
        given.push("aggregation_type");
    }
    if req.aggregation_key.is_some() {
        given.push("aggregation_key");
    }
    if req.event_type_filter.is_some() {
        given.push("event_type_filter");
    }
    if !req.property_filters.is_empty() {
        given.push("property_filters");
    }
    if !req.group_keys.is_empty() {
        given.push("group_keys");
    }
    if !given.is_empty() {
        return Err(Invalid(format!(
            "sql is mutually exclusive with {} (the query says what to aggregate, filter and group by)",
            given.join(", ")
        ))
        .into());
    }
    let sql = req.sql.unwrap_or_default();
    let query = SqlMetric::parse(&sql).map_err(|e| Invalid(e.to_string()))?;
    let columns = query.group_keys();
    Ok(Metric {
        id: new_id(),
        name: req.name,
        aggregation_type: AggregationType::CustomSql,
        aggregation_key: None,
        event_type_filter: None,
        property_filters: Vec::new(),
        group_keys: match columns.is_empty() {
            true => Vec::new(),
            false => vec![columns],
        },
        custom_fields: req.custom_fields,
        archived_at: None,
        sql: Some(sql),
    })
}

pub async fn get(st: &AppState, env: Env, id: &str) -> Result<Metric, MetricError> {
    Ok(load(&st.stores, env, kind::METRIC, id, "billable metric").await?)
}

/// One keyset page (`limit + 1` fetched, so the caller knows whether more follow).
pub async fn list(
    st: &AppState,
    env: Env,
    include_archived: bool,
    page: PageReq,
) -> Result<SeqPage<Metric>, MetricError> {
    let filter = match include_archived {
        true => ArchiveFilter::All,
        false => ArchiveFilter::Active,
    };
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::METRIC, None, filter, Some(fetch))
        .await?;
    docs.iter()
        .map(|d| Ok((d.seq, decode::<Metric>(d)?)))
        .collect()
}

/// Archives a metric (idempotent).
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<(), MetricError> {
    let now = Time(st.now_ms());
    modify_doc(
        st,
        env,
        kind::METRIC,
        id,
        "billable metric",
        |m: &mut Metric| {
            if m.archived_at.is_some() {
                return Ok::<_, MetricError>(Write::Unchanged);
            }
            m.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await?;
    Ok(())
}
