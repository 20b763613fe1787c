//! Usage queries (`POST /v1/usage`, `POST /v1/usage/groups`) and the customer's metrics
//! (`GET /v1/customers/{id}/billable-metrics`), answered from the stored hourly rows and their
//! rollups, aggregated exactly as rating aggregates them (core's accumulators).
//!
//! Rules:
//! - Windows: HOUR = each UTC hour, DAY = each UTC day (the first and last cut at the range's
//!   ends when those are not midnights), NONE = the whole range; `[starting_on, ending_before)`
//!   must be hour-aligned.
//! - Reads go through the rollup cover (`tally_core::rollup::cover`), as drafts do: a DAY or
//!   NONE window is read from the coarsest clean blocks tiling it (cut at the window bounds),
//!   days not yet rolled up (dirty) hour by hour; HOUR windows read hours. So a window costs a
//!   few rows per group whatever its length, and the answer never depends on how far the
//!   compactor got.
//! - A customer's usage is the merge over every reference its events were sent under (its id
//!   and its ingest aliases, `Customer::refs`), as invoices count it.
//! - Grouping projects the stored grain (the metric's sorted union of group-key properties) onto
//!   the asked keys and merges the accumulators of rows with equal projected values. A window
//!   (or group) with no usage has value `null`; LATEST shows the latest value inside the window.
//!
//! Reads only.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use tally_core::accumulate::{Accumulator, GroupValues};
use tally_core::rating::UsageRow;
use tally_core::rollup::{self, Level, Range};
use tally_core::time::DAY_MS;

use super::Invalid;
use crate::model::{
    decode, kind, load, Contract, Customer, LoadError, Metric, Product, RateRecord,
};
use crate::store::{ArchiveFilter, Env, StoreError};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A window's total no longer fits an exact decimal.
    #[error("the usage total overflows the exact decimal range")]
    Overflow,
    #[error(transparent)]
    Invoice(#[from] super::invoices::InvoiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for UsageError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => UsageError::NotFound(what),
            LoadError::Store(e) => UsageError::Store(e),
        }
    }
}

type Res<T> = std::result::Result<T, UsageError>;

fn invalid(msg: impl Into<String>) -> UsageError {
    UsageError::Invalid(Invalid(msg.into()))
}

crate::wire_enum!(
    /// `window_size` (any casing on input).
    WindowSize { Hour => "HOUR", Day => "DAY", None => "NONE" }
);

/// One window `[start, end)`.
pub type Window = (i64, i64);

/// Checks a query range: both ends hour-aligned, end after start.
pub fn check_range(from_ms: i64, to_ms: i64) -> Res<()> {
    super::require_hour("starting_on", crate::wire::Time(from_ms))?;
    super::require_hour("ending_before", crate::wire::Time(to_ms))?;
    if to_ms <= from_ms {
        return Err(invalid("ending_before must be after starting_on"));
    }
    Ok(())
}

/// The windows of `[from, to)` (module rules).
pub fn windows(from_ms: i64, to_ms: i64, size: WindowSize) -> Vec<Window> {
    let step = match size {
        WindowSize::None => return vec![(from_ms, to_ms)],
        WindowSize::Hour => tally_core::time::HOUR_MS,
        WindowSize::Day => DAY_MS,
    };
    let mut out = Vec::new();
    let mut at = from_ms;
    while at < to_ms {
        let next = (at.div_euclid(step) + 1).saturating_mul(step).min(to_ms);
        out.push((at, next));
        at = next;
    }
    out
}

/// How many windows `[from, to)` has, without listing them.
pub fn window_count(from_ms: i64, to_ms: i64, size: WindowSize) -> usize {
    let step = match size {
        WindowSize::None => return 1,
        WindowSize::Hour => tally_core::time::HOUR_MS,
        WindowSize::Day => DAY_MS,
    };
    let first = from_ms.div_euclid(step);
    let last = (to_ms - 1).div_euclid(step);
    usize::try_from(last - first + 1).unwrap_or(0)
}

/// The window of index `i` of `[from, to)`.
pub fn window_at(from_ms: i64, to_ms: i64, size: WindowSize, i: usize) -> Window {
    let step = match size {
        WindowSize::None => return (from_ms, to_ms),
        WindowSize::Hour => tally_core::time::HOUR_MS,
        WindowSize::Day => DAY_MS,
    };
    let base = from_ms.div_euclid(step) + i as i64;
    let start = (base * step).max(from_ms);
    let end = ((base + 1) * step).min(to_ms);
    (start, end)
}

/// The stored rows of one customer (all its references) and one metric over the consecutive
/// `wins`, each window's rows apart (module rules: HOUR reads hours, others the rollup cover cut
/// at every window start).
pub async fn window_rows(
    st: &AppState,
    env: Env,
    refs: &[String],
    metric_id: &str,
    wins: &[Window],
    size: WindowSize,
) -> Res<Vec<Vec<UsageRow>>> {
    let mut out: Vec<Vec<UsageRow>> = vec![Vec::new(); wins.len()];
    let (Some(first), Some(last)) = (wins.first(), wins.last()) else {
        return Ok(out);
    };
    let (from, to) = (first.0, last.1);
    let ids = [metric_id.to_string()];
    let usage = &st.stores.usage;
    let rows = match size {
        WindowSize::Hour => {
            let range = Range {
                level: Level::Hour,
                from_ms: from,
                to_ms: to,
            };
            usage.level_rows(env, refs, &ids, range).await?
        }
        WindowSize::Day | WindowSize::None => {
            let dirty = usage.dirty_days(env, refs, &ids, from, to).await?;
            let cuts: Vec<i64> = wins.iter().skip(1).map(|w| w.0).collect();
            let blocks = rollup::cover(from, to, &cuts, &dirty);
            usage.usage_blocks(env, refs, &ids, &blocks).await?
        }
    };
    for row in rows {
        // A block never crosses a window start, so its start places it.
        let i = wins.partition_point(|w| w.1 <= row.hour_ms);
        if let Some(bucket) = out.get_mut(i) {
            bucket.push(row);
        }
    }
    Ok(out)
}

/// Where each of `keys` sits in the metric's grain; an error names a key not in it.
pub fn key_positions(metric: &Metric, keys: &[String], field: &str) -> Res<Vec<usize>> {
    let grain = metric.def().grain();
    keys.iter()
        .map(|k| {
            grain.iter().position(|g| g == k).ok_or_else(|| {
                invalid(format!(
                    "{field}: {k:?} is not a group key of billable metric {}",
                    metric.id
                ))
            })
        })
        .collect()
}

/// The rows merged per projection onto `positions` (empty positions: one total).
pub fn project(rows: &[UsageRow], positions: &[usize]) -> Res<BTreeMap<GroupValues, Accumulator>> {
    let mut out: BTreeMap<GroupValues, Accumulator> = BTreeMap::new();
    for row in rows {
        let key: GroupValues = positions
            .iter()
            .map(|&i| row.groups.get(i).cloned().flatten())
            .collect();
        match out.get_mut(&key) {
            Some(acc) => acc.merge(&row.acc).map_err(|_| UsageError::Overflow)?,
            None => {
                out.insert(key, row.acc.clone());
            }
        }
    }
    Ok(out)
}

/// The total of `rows`, `None` without any.
pub fn total(rows: &[UsageRow]) -> Res<Option<Decimal>> {
    Ok(project(rows, &[])?
        .values()
        .next()
        .map(Accumulator::quantity))
}

/// The environment's metrics: those named (in that order; unknown ones are a 400), or every
/// non-archived one in creation order.
pub async fn metrics(st: &AppState, env: Env, ids: Option<&[String]>) -> Res<Vec<Metric>> {
    match ids {
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(metric(st, env, id, "billable_metrics").await?);
            }
            Ok(out)
        }
        None => {
            let docs = st
                .stores
                .config
                .list_docs(env, kind::METRIC, None, ArchiveFilter::Active, None)
                .await?;
            Ok(docs
                .iter()
                .map(decode)
                .collect::<std::result::Result<_, _>>()?)
        }
    }
}

/// One metric; an unknown id is a 400 naming `field`.
pub async fn metric(st: &AppState, env: Env, id: &str, field: &str) -> Res<Metric> {
    match load(&st.stores, env, kind::METRIC, id, "billable metric").await {
        Ok(m) => Ok(m),
        Err(LoadError::NotFound(_)) => Err(invalid(format!(
            "{field}: billable metric {id:?} not found"
        ))),
        Err(LoadError::Store(e)) => Err(e.into()),
    }
}

/// The environment's customers: those named (unknown ones are a 400), or every non-archived
/// one in creation order.
pub async fn customers(st: &AppState, env: Env, ids: Option<&[String]>) -> Res<Vec<Customer>> {
    match ids {
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(customer(st, env, id, "customer_ids").await?);
            }
            Ok(out)
        }
        None => {
            let docs = st
                .stores
                .config
                .list_docs(env, kind::CUSTOMER, None, ArchiveFilter::Active, None)
                .await?;
            Ok(docs
                .iter()
                .map(decode)
                .collect::<std::result::Result<_, _>>()?)
        }
    }
}

/// One customer; an unknown id is a 400 naming `field`.
pub async fn customer(st: &AppState, env: Env, id: &str, field: &str) -> Res<Customer> {
    match load(&st.stores, env, kind::CUSTOMER, id, "customer").await {
        Ok(c) => Ok(c),
        Err(LoadError::NotFound(_)) => Err(invalid(format!("{field}: customer {id:?} not found"))),
        Err(LoadError::Store(e)) => Err(e.into()),
    }
}

/// The customer's current billing period: the period holding now of its first contract (in
/// creation order, not archived) that has one. A 400 when none has.
pub async fn current_period(st: &AppState, env: Env, customer_id: &str) -> Res<Window> {
    let now = st.now_ms();
    let contracts: Vec<Contract> =
        crate::model::load_children(&st.stores, env, kind::CONTRACT, customer_id).await?;
    contracts
        .iter()
        .filter(|c| c.archived_at.is_none())
        .find_map(|c| {
            let periods = c.snapshot().invoiced_periods(now);
            let p = periods.into_iter().find(|p| p.contains(now))?;
            Some((p.start_ms, p.end_ms))
        })
        .ok_or_else(|| {
            invalid("current_period: the customer has no contract in a current billing period")
        })
}

/// The metrics of the products on the customer's contracts' rate cards (`on_current_plan`:
/// only contracts in effect now), archived ones only with `include_archived`, sorted by name
/// then id.
pub async fn customer_metrics(
    st: &AppState,
    env: Env,
    customer_id: &str,
    include_archived: bool,
    on_current_plan: bool,
) -> Res<Vec<Metric>> {
    let _: Customer = load(&st.stores, env, kind::CUSTOMER, customer_id, "customer").await?;
    let now = st.now_ms();
    let contracts: Vec<Contract> =
        crate::model::load_children(&st.stores, env, kind::CONTRACT, customer_id).await?;
    let mut cards = BTreeSet::new();
    for c in &contracts {
        let current = c.archived_at.is_none()
            && c.starting_at.0 <= now
            && c.ending_before.is_none_or(|e| now < e.0);
        if on_current_plan && !current {
            continue;
        }
        if let Some(card) = &c.rate_card_id {
            cards.insert(card.clone());
        }
    }
    let mut products = BTreeSet::new();
    for card in &cards {
        let docs = st
            .stores
            .config
            .list_docs(env, kind::RATE, Some(card), ArchiveFilter::All, None)
            .await?;
        for doc in &docs {
            let rate: RateRecord = decode(doc)?;
            products.insert(rate.product_id);
        }
    }
    let mut metric_ids = BTreeSet::new();
    for id in &products {
        let Some(doc) = st.stores.config.get_doc(env, kind::PRODUCT, id).await? else {
            continue;
        };
        let product: Product = decode(&doc)?;
        if let Some(rated) = product.rated() {
            metric_ids.extend(rated.versions.iter().map(|(_, s)| s.metric_id.clone()));
        }
    }
    let mut out = Vec::new();
    for id in &metric_ids {
        if let Some(doc) = st.stores.config.get_doc(env, kind::METRIC, id).await? {
            let m: Metric = decode(&doc)?;
            if include_archived || m.archived_at.is_none() {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(out)
}

/// A metric asked of `POST /v1/usage`, with its optional `group_by` (key and values).
pub struct MetricQuery {
    pub id: String,
    pub group_by: Option<(String, Option<Vec<String>>)>,
}

/// `POST /v1/usage`, validated by [`list`].
pub struct ListQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub size: WindowSize,
    pub customer_ids: Option<Vec<String>>,
    pub metrics: Option<Vec<MetricQuery>>,
}

/// One (customer, metric, window) of `POST /v1/usage`.
pub struct UsageItem {
    pub customer_id: String,
    pub metric_id: String,
    pub metric_name: String,
    pub window: Window,
    pub value: Option<Decimal>,
    /// With `group_by`: each value's total (`None` = no usage with that value).
    pub groups: Option<BTreeMap<String, Option<Decimal>>>,
}

/// Most `group_by.values` one metric may ask for.
pub const MAX_GROUP_VALUES: usize = 200;

/// The items `[offset, offset + limit)` of `q`'s (customer, metric, window) list (customers in
/// the order asked or created, then metrics likewise, then windows in time order), and the
/// offset of the next page. Only the page's items are read.
pub async fn list(
    st: &AppState,
    env: Env,
    q: &ListQuery,
    offset: usize,
    limit: usize,
) -> Res<(Vec<UsageItem>, Option<usize>)> {
    check_range(q.from_ms, q.to_ms)?;
    let ids: Option<Vec<String>> = q
        .metrics
        .as_ref()
        .map(|ms| ms.iter().map(|m| m.id.clone()).collect());
    let metrics = metrics(st, env, ids.as_deref()).await?;
    let mut grouping: Vec<Option<(usize, Option<Vec<String>>)>> = Vec::new();
    for (i, metric) in metrics.iter().enumerate() {
        let asked = q.metrics.as_ref().and_then(|ms| ms[i].group_by.as_ref());
        grouping.push(match asked {
            None => None,
            Some((key, values)) => {
                let field = format!("billable_metrics[{i}].group_by.key");
                let pos = key_positions(metric, std::slice::from_ref(key), &field)?[0];
                if values.as_ref().is_some_and(|v| v.len() > MAX_GROUP_VALUES) {
                    return Err(invalid(format!(
                        "billable_metrics[{i}].group_by.values: at most {MAX_GROUP_VALUES} values"
                    )));
                }
                Some((pos, values.clone()))
            }
        });
    }
    let customers = customers(st, env, q.customer_ids.as_deref()).await?;
    let per_pair = window_count(q.from_ms, q.to_ms, q.size);
    let count = customers.len() * metrics.len() * per_pair;
    let end = offset.saturating_add(limit).min(count);
    let mut out = Vec::with_capacity(end.saturating_sub(offset));
    let mut at = offset;
    while at < end {
        let pair = at / per_pair;
        let first = at % per_pair;
        let last = (first + (end - at)).min(per_pair);
        let customer = &customers[pair / metrics.len()];
        let m = pair % metrics.len();
        let metric = &metrics[m];
        let wins: Vec<Window> = (first..last)
            .map(|i| window_at(q.from_ms, q.to_ms, q.size, i))
            .collect();
        let rows = window_rows(st, env, &customer.refs(), &metric.id, &wins, q.size).await?;
        for (win, rows) in wins.iter().zip(&rows) {
            let groups = match &grouping[m] {
                None => None,
                Some((pos, values)) => {
                    let by = project(rows, &[*pos])?;
                    let of = |v: &str| {
                        by.get(&vec![Some(v.to_string())])
                            .map(Accumulator::quantity)
                    };
                    Some(match values {
                        Some(values) => values.iter().map(|v| (v.clone(), of(v))).collect(),
                        None => by
                            .iter()
                            .filter_map(|(k, acc)| Some((k[0].clone()?, Some(acc.quantity()))))
                            .collect(),
                    })
                }
            };
            out.push(UsageItem {
                customer_id: customer.id.clone(),
                metric_id: metric.id.clone(),
                metric_name: metric.name.clone(),
                window: *win,
                value: total(rows)?,
                groups,
            });
        }
        at += last - first;
    }
    Ok((out, (end < count).then_some(end)))
}

/// `POST /v1/usage/groups` as asked (validated by [`groups`]).
pub struct GroupsQuery {
    pub customer_id: String,
    pub metric_id: String,
    pub size: WindowSize,
    pub starting_on: Option<i64>,
    pub ending_before: Option<i64>,
    pub current_period: bool,
    pub group_key: Option<Vec<String>>,
    pub group_filters: Option<BTreeMap<String, Vec<String>>>,
    /// The deprecated single-key form `{key, values?}`.
    pub group_by: Option<(String, Option<Vec<String>>)>,
}

/// One (window, group) of `POST /v1/usage/groups`.
pub struct GroupItem {
    pub window: Window,
    pub value: Option<Decimal>,
    /// The keys grouped by and this group's values (`None` = the property was absent); empty
    /// without grouping.
    pub group: Vec<(String, Option<String>)>,
}

/// Every item of `q` in window order, then group values order: one per window without
/// grouping (value `None` without usage), else one per group with usage in the window.
/// Also whether the key is compound (its page limit is 100 by default).
pub async fn groups(st: &AppState, env: Env, q: &GroupsQuery) -> Res<(Vec<GroupItem>, bool)> {
    let customer: Customer =
        load(&st.stores, env, kind::CUSTOMER, &q.customer_id, "customer").await?;
    let metric = metric(st, env, &q.metric_id, "billable_metric_id").await?;
    let (from, to) = match (q.current_period, q.starting_on, q.ending_before) {
        (true, None, None) => current_period(st, env, &customer.id).await?,
        (true, _, _) => {
            return Err(invalid(
                "current_period cannot be combined with starting_on or ending_before",
            ))
        }
        (false, Some(from), Some(to)) => (from, to),
        (false, _, _) => {
            return Err(invalid(
                "starting_on and ending_before are required unless current_period is true",
            ))
        }
    };
    check_range(from, to)?;
    let (keys, filters): (Vec<String>, BTreeMap<String, Vec<String>>) =
        match (&q.group_key, &q.group_by) {
            (Some(_), Some(_)) => {
                return Err(invalid("group_by cannot be combined with group_key"));
            }
            (Some(keys), None) => {
                let asked: BTreeSet<&String> = keys.iter().collect();
                let defined = metric
                    .group_keys
                    .iter()
                    .any(|k| k.iter().collect::<BTreeSet<_>>() == asked && k.len() == keys.len());
                if keys.is_empty() || !defined {
                    return Err(invalid(format!(
                        "group_key: {keys:?} is not a group key of billable metric {}",
                        metric.id
                    )));
                }
                let filters = q.group_filters.clone().unwrap_or_default();
                if let Some(k) = filters.keys().find(|k| !keys.contains(k)) {
                    return Err(invalid(format!("group_filters: {k:?} is not in group_key")));
                }
                (keys.clone(), filters)
            }
            (None, Some((key, values))) => {
                if q.group_filters.is_some() {
                    return Err(invalid("group_filters requires group_key"));
                }
                let filters = values.iter().map(|v| (key.clone(), v.clone())).collect();
                (vec![key.clone()], filters)
            }
            (None, None) => {
                if q.group_filters.is_some() {
                    return Err(invalid("group_filters requires group_key"));
                }
                (Vec::new(), BTreeMap::new())
            }
        };
    let positions = key_positions(&metric, &keys, "group_key")?;
    let wins = windows(from, to, q.size);
    let rows = window_rows(st, env, &customer.refs(), &metric.id, &wins, q.size).await?;
    let mut out = Vec::new();
    for (win, rows) in wins.iter().zip(&rows) {
        if keys.is_empty() {
            out.push(GroupItem {
                window: *win,
                value: total(rows)?,
                group: Vec::new(),
            });
            continue;
        }
        for (values, acc) in project(rows, &positions)? {
            let kept = keys.iter().zip(&values).all(|(k, v)| match filters.get(k) {
                None => true,
                Some(allowed) if allowed.is_empty() => true,
                Some(allowed) => v.as_ref().is_some_and(|v| allowed.contains(v)),
            });
            if kept {
                out.push(GroupItem {
                    window: *win,
                    value: Some(acc.quantity()),
                    group: keys.iter().cloned().zip(values).collect(),
                });
            }
        }
    }
    Ok((out, keys.len() > 1))
}

/// One period's costs: per credit type id, its name, total and line totals `(name, cost)`.
pub struct PeriodCosts {
    pub start_ms: i64,
    pub end_ms: i64,
    pub credit_types: BTreeMap<String, CreditTypeCosts>,
}

#[derive(Default)]
pub struct CreditTypeCosts {
    pub name: String,
    pub cost: Decimal,
    pub lines: Vec<(String, Decimal)>,
}

/// The customer's costs per billing period in `[from, to)`: its USAGE invoices (every contract,
/// drafts computed now, others frozen) whose periods lie inside the range, their lines' totals
/// summed per credit type, periods in time order (invoices of one period merged).
pub async fn costs(
    st: &AppState,
    env: Env,
    customer_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Res<Vec<PeriodCosts>> {
    if to_ms <= from_ms {
        return Err(invalid("ending_before must be after starting_on"));
    }
    let q = super::invoices::InvoiceQuery {
        contract_id: None,
        status: None,
        starting_on: Some(from_ms),
        ending_before: Some(to_ms),
        descending: false,
        invoice_type: Some("USAGE".into()),
        credit_type_id: None,
        skip_zero_lines: false,
    };
    let page = super::invoices::list(st, env, customer_id, &q, 0, i64::from(u32::MAX)).await?;
    let mut periods: BTreeMap<(i64, i64), BTreeMap<String, CreditTypeCosts>> = BTreeMap::new();
    let time = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|t| t.as_str())
            .and_then(|t| tally_core::time::parse_rfc3339_ms(t).ok())
    };
    let dec = |v: Option<&serde_json::Value>| {
        v.map(|n| n.to_string())
            .and_then(|t| tally_core::decimal::parse_decimal(&t))
            .unwrap_or_default()
    };
    for inv in &page.items {
        let (Some(start), Some(end)) = (time(inv, "start_timestamp"), time(inv, "end_timestamp"))
        else {
            continue;
        };
        let by_type = periods.entry((start, end)).or_default();
        let lines = inv.get("line_items").and_then(|l| l.as_array());
        for line in lines.into_iter().flatten() {
            let Some(ct) = line.get("credit_type") else {
                continue;
            };
            let id = ct.get("id").and_then(|i| i.as_str()).unwrap_or_default();
            let entry = by_type.entry(id.to_string()).or_default();
            entry.name = ct
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string();
            let cost = dec(line.get("total"));
            entry.cost =
                tally_core::decimal::add_exact(entry.cost, cost).ok_or(UsageError::Overflow)?;
            let name = line
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            entry.lines.push((name.to_string(), cost));
        }
    }
    Ok(periods
        .into_iter()
        .map(|((start_ms, end_ms), credit_types)| PeriodCosts {
            start_ms,
            end_ms,
            credit_types,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = tally_core::time::HOUR_MS;

    #[test]
    fn windows_cut_at_days_and_ends() {
        let from = DAY_MS + 20 * H;
        let to = 3 * DAY_MS + 2 * H;
        let days = windows(from, to, WindowSize::Day);
        assert_eq!(
            days,
            vec![
                (from, 2 * DAY_MS),
                (2 * DAY_MS, 3 * DAY_MS),
                (3 * DAY_MS, to)
            ]
        );
        assert_eq!(window_count(from, to, WindowSize::Day), 3);
        for (i, w) in days.iter().enumerate() {
            assert_eq!(window_at(from, to, WindowSize::Day, i), *w);
        }
        let hours = windows(from, to, WindowSize::Hour);
        assert_eq!(hours.len(), window_count(from, to, WindowSize::Hour));
        assert_eq!(hours.len(), 30);
        assert_eq!(window_at(from, to, WindowSize::Hour, 29), hours[29]);
        assert_eq!(windows(from, to, WindowSize::None), vec![(from, to)]);
    }
}
