//! Tests of product timelines and product checks.

use super::*;
use crate::metric::Aggregation;
use crate::rating::{ConversionOperation, RoundingMethod};
use alloc::string::ToString;
use alloc::vec;
use core::str::FromStr;

fn attrs(metric: Option<&str>) -> ProductAttrs {
    ProductAttrs {
        name: "P".into(),
        billable_metric_id: metric.map(Into::into),
        pricing_group_key: Some(vec!["model".into()]),
        presentation_group_key: None,
        quantity_conversion: None,
        quantity_rounding: None,
        tags: vec!["a".into()],
        ..ProductAttrs::default()
    }
}

fn change(at: i64) -> ProductChange {
    ProductChange {
        starting_at_ms: at,
        ..ProductChange::default()
    }
}

fn metric(group_keys: Vec<Vec<String>>) -> MetricDef {
    MetricDef {
        id: "m".into(),
        aggregation: Aggregation::Sum,
        aggregation_key: Some("v".into()),
        event_type_filter: None,
        property_filters: vec![],
        group_keys,
    }
}

fn doubling() -> QuantityConversion {
    QuantityConversion {
        conversion_factor: Decimal::from(2),
        operation: ConversionOperation::Multiply,
        name: Some("double".into()),
    }
}

#[test]
fn changes_apply_in_time_order_later_made_wins_ties() {
    let tl = ProductTimeline {
        initial: attrs(Some("m")),
        changes: vec![
            ProductChange {
                name: Some("late".into()),
                ..change(200)
            },
            ProductChange {
                name: Some("first".into()),
                ..change(100)
            },
            ProductChange {
                name: Some("second".into()),
                ..change(100)
            },
        ],
    };
    assert_eq!(tl.order(), vec![1, 2, 0]);
    assert_eq!(tl.state_at(99).name, "P");
    assert_eq!(tl.state_at(100).name, "second");
    assert_eq!(tl.state_at(i64::MAX).name, "late");
    assert_eq!(tl.last_applied(99), None);
    assert_eq!(tl.last_applied(150), Some(2));
    assert_eq!(tl.last_applied(200), Some(0));
}

#[test]
fn explicit_null_clears_conversion_absent_keeps_it() {
    let mut initial = attrs(Some("m"));
    initial.quantity_conversion = Some(doubling());
    let tl = ProductTimeline {
        initial,
        changes: vec![
            ProductChange {
                tags: Some(vec![]),
                ..change(10)
            },
            ProductChange {
                quantity_conversion: Some(None),
                ..change(20)
            },
        ],
    };
    assert_eq!(tl.state_at(15).quantity_conversion, Some(doubling()));
    assert!(tl.state_at(15).tags.is_empty());
    assert_eq!(tl.state_at(20).quantity_conversion, None);
}

#[test]
fn rating_versions_start_at_the_beginning_of_time_without_labels() {
    let mut initial = attrs(Some("m"));
    initial.quantity_conversion = Some(doubling());
    let tl = ProductTimeline {
        initial,
        changes: vec![ProductChange {
            billable_metric_id: Some("m2".into()),
            ..change(50)
        }],
    };
    let versions = tl.rating_versions().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].0, i64::MIN);
    assert_eq!(versions[0].1.metric_id, "m");
    assert_eq!(versions[0].1.pricing_group_key, vec!["model".to_string()]);
    let conv = versions[0].1.quantity_conversion.as_ref().unwrap();
    assert_eq!(conv.name, None);
    assert_eq!(
        (versions[1].0, versions[1].1.metric_id.as_str()),
        (50, "m2")
    );
    let rated = tl.rated("p1").unwrap();
    assert_eq!(rated.product_id, "p1");
    assert_eq!(rated.names, vec![(i64::MIN, "P".to_string())]);
}

#[test]
fn no_metric_means_no_rating_versions() {
    let tl = ProductTimeline {
        initial: attrs(None),
        changes: vec![],
    };
    assert_eq!(tl.rating_versions(), None);
    assert_eq!(
        required_metric(&tl.initial),
        Err(ProductError::MissingMetric)
    );
    assert_eq!(required_metric(&attrs(Some("m"))), Ok("m"));
}

#[test]
fn usage_checks() {
    let m = metric(vec![vec!["model".into()]]);
    let good = attrs(Some("m"));
    assert_eq!(check_usage_attrs(&good, &m, false, true), Ok(()));
    assert_eq!(check_usage_attrs(&good, &m, true, false), Ok(()));
    assert_eq!(
        check_usage_attrs(&good, &m, true, true),
        Err(ProductError::ArchivedMetric)
    );
    let mut bad_key = good.clone();
    bad_key.presentation_group_key = Some(vec!["user".into()]);
    let err = check_usage_attrs(&bad_key, &m, false, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "group key \"user\" is not one of the billable metric's group keys"
    );
    let mut zero = good.clone();
    zero.quantity_conversion = Some(QuantityConversion {
        conversion_factor: Decimal::from_str("0").unwrap(),
        ..doubling()
    });
    assert_eq!(
        check_usage_attrs(&zero, &m, false, false),
        Err(ProductError::NonPositiveConversion)
    );
    let mut places = good;
    places.quantity_rounding = Some(QuantityRounding {
        decimal_places: MAX_ROUNDING_PLACES + 1,
        rounding_method: RoundingMethod::RoundUp,
    });
    let err = check_usage_attrs(&places, &m, false, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "quantity_rounding.decimal_places must be between 0 and 20"
    );
}
