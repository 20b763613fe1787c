//! Billable metrics: which events they meter, how, and at what grain.
//!
//! A metric's *grain* is the sorted union of every property named in any of its group keys. Usage is
//! stored at that finest grain, so any product's pricing/presentation grouping is derived later by
//! merging, never by re-reading events.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulator, GroupValues, PartialKey};
use crate::decimal::parse_decimal;
use crate::event::Event;
use crate::time::hour_floor;

/// How a metric folds matching events into a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    Count,
    Sum,
    Max,
    Unique,
    Latest,
    /// An SQL billable metric (`sql_metric`, feature `sql`): it meters nothing at ingest; central
    /// evaluates its query over stored events and hands rating one `Sum` row per result group
    /// (the metric's one group key is its query's group columns).
    Sql,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyFilter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in_values: Option<Vec<String>>,
}

/// The metering part of a billable metric (names and custom fields live in central).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDef {
    pub id: String,
    pub aggregation: Aggregation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type_filter: Option<EventTypeFilter>,
    #[serde(default)]
    pub property_filters: Vec<PropertyFilter>,
    #[serde(default)]
    pub group_keys: Vec<Vec<String>>,
}

/// Why a metric definition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricError {
    MissingAggregationKey,
    EmptyFilterList(&'static str),
    EmptyGroupKey,
    DuplicateGroupKeyProperty,
    BlankPropertyName,
}

impl core::fmt::Display for MetricError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MetricError::MissingAggregationKey => {
                f.write_str("aggregation_key is required for SUM, MAX, UNIQUE and LATEST metrics")
            }
            MetricError::EmptyFilterList(what) => write!(f, "{what} must not be an empty list"),
            MetricError::EmptyGroupKey => f.write_str("group_keys must not contain an empty key"),
            MetricError::DuplicateGroupKeyProperty => {
                f.write_str("a group key must not name the same property twice")
            }
            MetricError::BlankPropertyName => f.write_str("property names must not be empty"),
        }
    }
}

impl MetricDef {
    /// Checks the definition is meaningful before it is stored.
    pub fn validate(&self) -> Result<(), MetricError> {
        if !matches!(self.aggregation, Aggregation::Count | Aggregation::Sql)
            && self.aggregation_key.as_deref().is_none_or(str::is_empty)
        {
            return Err(MetricError::MissingAggregationKey);
        }
        if let Some(f) = &self.event_type_filter {
            if f.in_values.as_ref().is_some_and(Vec::is_empty) {
                return Err(MetricError::EmptyFilterList("event_type_filter.in_values"));
            }
            if f.not_in_values.as_ref().is_some_and(Vec::is_empty) {
                return Err(MetricError::EmptyFilterList(
                    "event_type_filter.not_in_values",
                ));
            }
        }
        for pf in &self.property_filters {
            if pf.name.is_empty() {
                return Err(MetricError::BlankPropertyName);
            }
        }
        for key in &self.group_keys {
            if key.is_empty() {
                return Err(MetricError::EmptyGroupKey);
            }
            if key.iter().any(String::is_empty) {
                return Err(MetricError::BlankPropertyName);
            }
            let mut sorted = key.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != key.len() {
                return Err(MetricError::DuplicateGroupKeyProperty);
            }
        }
        Ok(())
    }

    /// The sorted, de-duplicated union of every group key's properties.
    pub fn grain(&self) -> Vec<String> {
        let mut props: Vec<String> = self.group_keys.iter().flatten().cloned().collect();
        props.sort();
        props.dedup();
        props
    }

    /// True when the event passes the event type filter and every property filter.
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(f) = &self.event_type_filter {
            let t = event.event_type.as_str();
            if f.in_values
                .as_ref()
                .is_some_and(|v| !v.iter().any(|x| x == t))
            {
                return false;
            }
            if f.not_in_values
                .as_ref()
                .is_some_and(|v| v.iter().any(|x| x == t))
            {
                return false;
            }
        }
        self.property_filters
            .iter()
            .all(|pf| filter_passes(pf, event))
    }

    /// The event's contribution to this metric, or `None` when the metric does not meter it (no
    /// match, the aggregated property is absent or not numeric where a number is needed, or an
    /// SQL metric, which is never metered).
    pub fn contribution(&self, event: &Event) -> Option<Accumulator> {
        if !self.matches(event) {
            return None;
        }
        let value = || event.property(self.aggregation_key.as_deref()?);
        let number = || value().and_then(parse_decimal);
        Some(match self.aggregation {
            Aggregation::Count => Accumulator::Count(1),
            Aggregation::Sum => Accumulator::Sum(number()?),
            Aggregation::Max => Accumulator::Max(number()?),
            Aggregation::Unique => Accumulator::unique_of(value()?),
            Aggregation::Latest => Accumulator::Latest {
                timestamp_ms: event.timestamp_ms,
                transaction_id: event.transaction_id.clone(),
                value: number()?,
            },
            // Computed from stored events, never from contributions.
            Aggregation::Sql => return None,
        })
    }

    /// The event's values for this metric's grain, `None` where a property is absent.
    pub fn group_values(&self, grain: &[String], event: &Event) -> GroupValues {
        grain
            .iter()
            .map(|p| event.property(p).map(String::from))
            .collect()
    }
}

fn filter_passes(pf: &PropertyFilter, event: &Event) -> bool {
    let value = event.property(&pf.name);
    match (pf.exists, value) {
        (Some(true), None) | (Some(false), Some(_)) => return false,
        _ => {}
    }
    if let Some(ins) = &pf.in_values {
        match value {
            Some(v) if ins.iter().any(|x| x == v) => {}
            _ => return false,
        }
    }
    if let Some(outs) = &pf.not_in_values {
        if value.is_some_and(|v| outs.iter().any(|x| x == v)) {
            return false;
        }
    }
    true
}

/// Every (partial key, contribution) an event makes across `metrics`, at each metric's grain and
/// the event's UTC hour. This is the one place events become usage, on every ingest path.
pub fn contributions<'a>(
    metrics: impl IntoIterator<Item = &'a MetricDef>,
    event: &Event,
) -> Vec<(PartialKey, Accumulator)> {
    let mut out = Vec::new();
    for metric in metrics {
        if let Some(acc) = metric.contribution(event) {
            let grain = metric.grain();
            out.push((
                PartialKey {
                    customer_ref: event.customer_id.clone(),
                    metric_id: metric.id.clone(),
                    groups: metric.group_values(&grain, event),
                    hour_ms: hour_floor(event.timestamp_ms),
                },
                acc,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use alloc::vec;
    use rust_decimal::Decimal;

    fn ev(event_type: &str, props: &[(&str, &str)]) -> Event {
        Event {
            transaction_id: "t".into(),
            customer_id: "c".into(),
            event_type: event_type.into(),
            timestamp_ms: 7_200_123,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn metric(aggregation: Aggregation, key: Option<&str>) -> MetricDef {
        MetricDef {
            id: "m".into(),
            aggregation,
            aggregation_key: key.map(Into::into),
            event_type_filter: Some(EventTypeFilter {
                in_values: Some(vec!["llm".into()]),
                not_in_values: None,
            }),
            property_filters: vec![],
            group_keys: vec![vec!["model".into()], vec!["user_id".into()]],
        }
    }

    #[test]
    fn event_type_filters() {
        let m = metric(Aggregation::Count, None);
        assert!(m.matches(&ev("llm", &[])));
        assert!(!m.matches(&ev("other", &[])));
        let mut n = m.clone();
        n.event_type_filter = Some(EventTypeFilter {
            in_values: None,
            not_in_values: Some(vec!["llm".into()]),
        });
        assert!(!n.matches(&ev("llm", &[])));
        assert!(n.matches(&ev("x", &[])));
    }

    #[test]
    fn property_filters_exist_in_not_in() {
        let mut m = metric(Aggregation::Count, None);
        m.property_filters = vec![
            PropertyFilter {
                name: "region".into(),
                exists: Some(true),
                in_values: None,
                not_in_values: None,
            },
            PropertyFilter {
                name: "tier".into(),
                exists: None,
                in_values: Some(vec!["gold".into()]),
                not_in_values: None,
            },
            PropertyFilter {
                name: "env".into(),
                exists: None,
                in_values: None,
                not_in_values: Some(vec!["test".into()]),
            },
            PropertyFilter {
                name: "debug".into(),
                exists: Some(false),
                in_values: None,
                not_in_values: None,
            },
        ];
        assert!(m.matches(&ev("llm", &[("region", "eu"), ("tier", "gold")])));
        assert!(m.matches(&ev(
            "llm",
            &[("region", "eu"), ("tier", "gold"), ("env", "prod")]
        )));
        assert!(!m.matches(&ev("llm", &[("tier", "gold")])));
        assert!(!m.matches(&ev("llm", &[("region", "eu"), ("tier", "silver")])));
        assert!(!m.matches(&ev("llm", &[("region", "eu")])));
        assert!(!m.matches(&ev(
            "llm",
            &[("region", "eu"), ("tier", "gold"), ("env", "test")]
        )));
        assert!(!m.matches(&ev(
            "llm",
            &[("region", "eu"), ("tier", "gold"), ("debug", "1")]
        )));
    }

    #[test]
    fn contributions_per_aggregation() {
        let e = ev("llm", &[("tokens", "12.5"), ("model", "a")]);
        assert_eq!(
            metric(Aggregation::Count, None).contribution(&e),
            Some(Accumulator::Count(1))
        );
        assert_eq!(
            metric(Aggregation::Sum, Some("tokens")).contribution(&e),
            Some(Accumulator::Sum(Decimal::new(125, 1)))
        );
        assert_eq!(
            metric(Aggregation::Sum, Some("model")).contribution(&e),
            None
        );
        assert_eq!(
            metric(Aggregation::Sum, Some("absent")).contribution(&e),
            None
        );
        assert_eq!(
            metric(Aggregation::Unique, Some("model")).contribution(&e),
            Some(Accumulator::unique_of("a"))
        );
    }

    #[test]
    fn grain_and_group_values() {
        let m = metric(Aggregation::Count, None);
        let grain = m.grain();
        assert_eq!(grain, ["model", "user_id"]);
        let e = ev("llm", &[("model", "a")]);
        let c = contributions(&[m], &e);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0.groups, vec![Some("a".to_string()), None]);
        assert_eq!(c[0].0.hour_ms, 7_200_000);
    }

    #[test]
    fn sql_metrics_never_contribute() {
        let mut m = metric(Aggregation::Sql, None);
        m.event_type_filter = None;
        m.group_keys = vec![vec!["region".into()]];
        assert!(m.validate().is_ok());
        let e = ev("llm", &[("region", "eu")]);
        assert!(m.matches(&e));
        assert_eq!(m.contribution(&e), None);
        let count = metric(Aggregation::Count, None);
        let c = contributions(&[m, count], &ev("llm", &[]));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, Accumulator::Count(1));
    }

    #[test]
    fn validation() {
        assert_eq!(
            metric(Aggregation::Sum, None).validate(),
            Err(MetricError::MissingAggregationKey)
        );
        assert!(metric(Aggregation::Count, None).validate().is_ok());
        let mut m = metric(Aggregation::Count, None);
        m.group_keys = vec![vec![]];
        assert_eq!(m.validate(), Err(MetricError::EmptyGroupKey));
    }
}
