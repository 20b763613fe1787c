//! Contract-pricing products: create, get, list, time-versioned update, archive.
//!
//! Invariants: a usage product's rating attributes are checked against its metric by core's
//! rules (`tally_core::product`) at every version from an update on; a COMPOSITE product's
//! `composite_product_ids` name existing products that are not COMPOSITE (so a composite never
//! includes a composite, and there are no cycles), and only COMPOSITE products carry composite
//! fields; every update is a
//! read-modify-write with optimistic concurrency, so concurrent updates are all kept (each
//! acknowledged update is in the product's history afterwards).

use tally_core::product;

use super::{lost_race_is_false, modify_doc, require_hour, require_text, retry_conflicts};
use super::{Invalid, SeqPage, Write};
use crate::model::{
    decode, encode, kind, load, new_id, LoadError, Metric, Product, ProductState, ProductType,
    ProductUpdate,
};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq, StoreError};
use crate::wire::Time;
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for ProductError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => ProductError::NotFound(what),
            LoadError::Store(e) => ProductError::Store(e),
        }
    }
}

impl From<product::ProductError> for ProductError {
    fn from(e: product::ProductError) -> Self {
        ProductError::Invalid(Invalid(e.to_string()))
    }
}

type Result<T> = std::result::Result<T, ProductError>;

/// Checks a usage product's rating attributes against its metric (the rules are core's).
/// `new_metric`: the metric is being attached now, so an archived one is refused.
async fn check_usage_state(
    st: &AppState,
    env: Env,
    state: &ProductState,
    new_metric: bool,
) -> Result<()> {
    let attrs = state.attrs();
    let metric_id = product::required_metric(&attrs)?;
    let metric: Metric = load(&st.stores, env, kind::METRIC, metric_id, "billable metric").await?;
    let archived = metric.archived_at.is_some();
    product::check_usage_attrs(&attrs, &metric.def(), archived, new_metric)?;
    Ok(())
}

/// Most entries of `composite_product_ids`, and of `composite_tags`.
pub const MAX_COMPOSITE_ENTRIES: usize = 100;

/// `include_composite_spend: true` (a composite over other composites) is not implemented.
pub fn refuse_composite_spend(include: Option<bool>) -> std::result::Result<(), Invalid> {
    match include {
        Some(true) => Err(Invalid(
            "include_composite_spend: not supported; a composite never includes the spend of \
             other COMPOSITE products"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The composite fields of a product state or update: ids, tags, `exclude_free_usage`.
struct CompositeFields<'a> {
    ids: Option<&'a [String]>,
    tags: Option<&'a [String]>,
    exclude_free_usage: Option<bool>,
}

impl<'a> CompositeFields<'a> {
    fn of_state(s: &'a ProductState) -> Self {
        CompositeFields {
            ids: s.composite_product_ids.as_deref(),
            tags: s.composite_tags.as_deref(),
            exclude_free_usage: s.exclude_free_usage,
        }
    }

    fn of_update(u: &'a ProductUpdate) -> Self {
        CompositeFields {
            ids: u.composite_product_ids.as_deref(),
            tags: u.composite_tags.as_deref(),
            exclude_free_usage: u.exclude_free_usage,
        }
    }

    /// The first composite field given, if any.
    fn first_given(&self) -> Option<&'static str> {
        [
            (self.ids.is_some(), "composite_product_ids"),
            (self.tags.is_some(), "composite_tags"),
            (self.exclude_free_usage.is_some(), "exclude_free_usage"),
        ]
        .into_iter()
        .find_map(|(given, field)| given.then_some(field))
    }
}

/// Checks the composite fields a product of `product_type` is given (on create or update): only
/// COMPOSITE products take them; ids and tags are bounded, tags are
/// non-empty text, and every id names an existing product that is not COMPOSITE.
async fn check_composite(
    st: &AppState,
    env: Env,
    product_type: ProductType,
    fields: CompositeFields<'_>,
) -> Result<()> {
    if product_type != ProductType::Composite {
        return match fields.first_given() {
            Some(field) => Err(Invalid(format!("{field}: only COMPOSITE products take it")).into()),
            None => Ok(()),
        };
    }
    let ids = fields.ids.unwrap_or_default();
    let tags = fields.tags.unwrap_or_default();
    for (field, n) in [
        ("composite_product_ids", ids.len()),
        ("composite_tags", tags.len()),
    ] {
        if n > MAX_COMPOSITE_ENTRIES {
            return Err(Invalid(format!(
                "{field}: at most {MAX_COMPOSITE_ENTRIES} entries are allowed"
            ))
            .into());
        }
    }
    for (i, tag) in tags.iter().enumerate() {
        require_text(&format!("composite_tags[{i}]"), tag, 256)?;
    }
    for (i, id) in ids.iter().enumerate() {
        let named = st.stores.config.get_doc(env, kind::PRODUCT, id).await?;
        let Some(doc) = named else {
            return Err(Invalid(format!(
                "composite_product_ids[{i}]: product {id} not found"
            ))
            .into());
        };
        if decode::<Product>(&doc)?.product_type == ProductType::Composite {
            return Err(Invalid(format!(
                "composite_product_ids[{i}]: {id} is a COMPOSITE product; a composite takes a \
                 percentage of other products' spend, never of a composite's"
            ))
            .into());
        }
    }
    Ok(())
}

/// A product as a client creates it: its type, initial state and custom fields.
pub struct NewProduct {
    pub product_type: ProductType,
    pub state: ProductState,
    pub custom_fields: std::collections::BTreeMap<String, String>,
}

pub async fn create(st: &AppState, env: Env, req: NewProduct) -> Result<String> {
    require_text("name", &req.state.name, 256)?;
    if req.product_type == ProductType::Usage {
        check_usage_state(st, env, &req.state, true).await?;
    }
    let composite = CompositeFields::of_state(&req.state);
    if req.product_type == ProductType::Composite
        && composite.ids.unwrap_or_default().is_empty()
        && composite.tags.unwrap_or_default().is_empty()
    {
        return Err(Invalid(
            "composite_product_ids: a COMPOSITE product needs composite_product_ids or \
             composite_tags (the products whose spend its percentage is of)"
                .into(),
        )
        .into());
    }
    check_composite(st, env, req.product_type, composite).await?;
    let product = Product {
        id: new_id(),
        product_type: req.product_type,
        current: req.state.clone(),
        initial: req.state,
        updates: Vec::new(),
        archived_at: None,
        custom_fields: req.custom_fields,
    };
    let doc = NewDoc {
        kind: kind::PRODUCT,
        id: &product.id,
        parent_id: None,
        unique_key: None,
        created_ms: product.initial.created_at.0,
        body: encode(&product)?,
    };
    st.stores.config.insert_docs(env, &[doc]).await?;
    Ok(product.id)
}

/// The product with its current state as of now.
pub async fn get(st: &AppState, env: Env, id: &str) -> Result<Product> {
    let product: Product = load(&st.stores, env, kind::PRODUCT, id, "product").await?;
    Ok(product.with_current(st.now_ms()))
}

/// One keyset page (`limit + 1` fetched, so the caller knows whether more follow).
pub async fn list(
    st: &AppState,
    env: Env,
    filter: ArchiveFilter,
    page: PageReq,
) -> Result<SeqPage<Product>> {
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::PRODUCT, None, filter, Some(fetch))
        .await?;
    let now = st.now_ms();
    docs.iter()
        .map(|d| Ok((d.seq, decode::<Product>(d)?.with_current(now))))
        .collect()
}

/// Appends a time-versioned update. Retried on a concurrent change of the product, so every
/// acknowledged update is kept; each attempt re-validates against the product as it is then.
pub async fn update(st: &AppState, env: Env, id: &str, u: ProductUpdate) -> Result<()> {
    require_hour("starting_at", u.starting_at)?;
    if let Some(name) = &u.name {
        require_text("name", name, 256)?;
    }
    let u = &u;
    retry_conflicts(move || async move {
        let doc = st.stores.config.get_doc(env, kind::PRODUCT, id).await?;
        let doc = doc.ok_or(ProductError::NotFound("product"))?;
        let mut product: Product = decode(&doc)?;
        check_composite(st, env, product.product_type, CompositeFields::of_update(u)).await?;
        product.updates.push(u.clone());
        if product.product_type == ProductType::Usage {
            // Every version from the update on must still be rateable.
            let new_metric = u.billable_metric_id.is_some();
            let at = u.starting_at.0;
            check_usage_state(st, env, &product.state_at(at), new_metric).await?;
            check_usage_state(st, env, &product.state_at(i64::MAX), new_metric).await?;
        }
        let product = product.with_current(st.now_ms());
        let archived = product.archived_at.is_some();
        let written = st
            .stores
            .config
            .update_doc(
                env,
                kind::PRODUCT,
                id,
                &encode(&product)?,
                archived,
                doc.version,
            )
            .await;
        Ok(lost_race_is_false(written)?.then_some(()))
    })
    .await
}

/// Archives a product (idempotent).
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    modify_doc(st, env, kind::PRODUCT, id, "product", |p: &mut Product| {
        if p.archived_at.is_some() {
            return Ok::<_, ProductError>(Write::Unchanged);
        }
        p.archived_at = Some(now);
        Ok(Write::Save { archived: true })
    })
    .await?;
    Ok(())
}
