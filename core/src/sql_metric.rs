//! SQL billable metrics: a restricted `SELECT` over the `events` table, parsed with `sqlparser`,
//! validated against an allow-list, compiled to a small [`SqlMetric`] plan and evaluated here, in
//! Rust, over [`Event`]s with exact decimals.
//!
//! The dialect (Metronome's): `SELECT <aggregate> AS value [, <column> [AS name] ...] FROM events
//! [WHERE <predicate>] [GROUP BY <column> ...]`. Columns are `properties.<name>` (or
//! `properties."any name"`), `event_type`, `timestamp`, `customer_id` (as sent) and
//! `transaction_id`. Aggregates: `COUNT(*)`, `COUNT(col)`, `COUNT(DISTINCT col)`, `SUM`, `MAX`,
//! `MIN`, `AVG`. Every column besides `value` is a group key and must be grouped by.
//!
//! Invariants:
//! - The query is never run by a database: evaluation is [`SqlMetric::evaluate`], so SQLite and
//!   PostgreSQL give the same answer and user text never reaches a database query.
//! - No floats: numbers are `Decimal`s parsed from their text; sums are exact or an error.
//! - Everything parsed is bounded: the SQL text ([`MAX_SQL_CHARS`]), group columns
//!   ([`MAX_GROUP_COLUMNS`]), the parser's recursion depth, and the groups one evaluation may
//!   produce ([`MAX_GROUPS`]: past it evaluation fails, it never truncates).
//! - Semantics are SQL's three-valued logic: a missing property is `NULL`; a comparison with
//!   `NULL` is unknown and an unknown `WHERE` drops the event.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;

use rust_decimal::Decimal;
use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, InTarget, ObjectName, ObjectNamePart, Query, Select,
    SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::accumulate::GroupValues;
use crate::decimal::{add_exact, div_round_half_even, parse_decimal};
use crate::event::Event;
use crate::time::{format_rfc3339_ms, parse_rfc3339_ms};

/// Longest SQL text accepted, in characters (central's limit on any string of a request body).
pub const MAX_SQL_CHARS: usize = 4_096;
/// Most group columns (non-`value` outputs) one query may have.
pub const MAX_GROUP_COLUMNS: usize = 10;
/// Most groups one evaluation may produce (one customer's events over one rated window).
pub const MAX_GROUPS: usize = 10_000;
/// The parser's recursion limit (nested parentheses, NOTs, signs...). Low, because a debug build's
/// parser frames are large and the limit is what keeps hostile input off the stack's end.
pub const MAX_NESTING: usize = 16;
/// Deepest a WHERE clause's tree may be (`a AND b AND c` is three deep: the parser builds long
/// AND/OR chains iteratively, but compiling and evaluating them recurses).
pub const MAX_CONDITION_DEPTH: usize = 128;
/// Decimal places of an `AVG` whose quotient does not terminate (rounded half-even; an exact
/// quotient is returned as it is). Fewer when the average's integer part leaves no room.
pub const AVG_DECIMAL_PLACES: u32 = 12;

/// Why an SQL metric was refused (each message is fit for a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError(String);

impl SqlError {
    fn new(msg: impl Into<String>) -> Self {
        SqlError(msg.into())
    }
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for SqlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "sql: {}", self.0)
    }
}

/// Why an evaluation failed (it never returns a partial answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// More than [`MAX_GROUPS`] groups.
    TooManyGroups,
    /// A SUM (or the sum under an AVG) left the exact decimal range.
    Overflow,
}

impl core::fmt::Display for EvalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EvalError::TooManyGroups => write!(
                f,
                "the SQL billable metric produced more than {MAX_GROUPS} groups in one period"
            ),
            EvalError::Overflow => {
                f.write_str("the SQL billable metric's sum overflows the decimal range")
            }
        }
    }
}

/// A column of the `events` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Property(String),
    EventType,
    Timestamp,
    CustomerId,
    TransactionId,
}

impl Column {
    /// The column's text for an event (`timestamp` as RFC 3339); `None` = `NULL`.
    fn text<'e>(&self, e: &'e Event) -> Option<Text<'e>> {
        Some(match self {
            Column::Property(p) => Text::Borrowed(e.property(p)?),
            Column::EventType => Text::Borrowed(&e.event_type),
            Column::CustomerId => Text::Borrowed(&e.customer_id),
            Column::TransactionId => Text::Borrowed(&e.transaction_id),
            Column::Timestamp => Text::Owned(format_rfc3339_ms(e.timestamp_ms)),
        })
    }

    /// The name an unaliased output column gets.
    fn default_name(&self) -> &str {
        match self {
            Column::Property(p) => p,
            Column::EventType => "event_type",
            Column::Timestamp => "timestamp",
            Column::CustomerId => "customer_id",
            Column::TransactionId => "transaction_id",
        }
    }
}

enum Text<'e> {
    Borrowed(&'e str),
    Owned(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

/// A literal of the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Number(Decimal),
    Null,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Column(Column),
    Literal(Literal),
    /// A `timestamp` bound: an RFC 3339 literal compared with the `timestamp` column.
    Instant(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// The compiled `WHERE` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Compare(Operand, CmpOp, Operand),
    /// `x [NOT] IN (literals)`.
    In {
        operand: Operand,
        list: Vec<Operand>,
        negated: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
    /// `x [NOT] LIKE 'pattern'` (`%` any run, `_` one character; no escape character).
    Like {
        operand: Operand,
        pattern: Vec<char>,
        negated: bool,
    },
}

/// The one aggregate, the query's `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    CountStar,
    Count(Column),
    CountDistinct(Column),
    Sum(Column),
    Max(Column),
    Min(Column),
    Avg(Column),
}

/// A validated SQL billable metric: what to aggregate, over which events, grouped how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMetric {
    aggregate: Aggregate,
    filter: Option<Predicate>,
    /// `(output name, column)` in SELECT order.
    groups: Vec<(String, Column)>,
}

/// One result row: the group's values at the metric's [`SqlMetric::grain`] (`None` = `NULL`, the
/// events that lack the property) and its `value` (`None` = SQL `NULL`, e.g. a SUM of no number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlRow {
    pub groups: GroupValues,
    pub value: Option<Decimal>,
}

impl SqlMetric {
    /// Parses and validates `sql`; the error says what is not allowed.
    pub fn parse(sql: &str) -> Result<SqlMetric, SqlError> {
        if sql.chars().count() > MAX_SQL_CHARS {
            return Err(SqlError::new(format!(
                "the query is longer than {MAX_SQL_CHARS} characters"
            )));
        }
        let mut statements = Parser::new(&GenericDialect {})
            .with_recursion_limit(MAX_NESTING)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| SqlError::new(format!("not valid SQL ({e})")))?;
        if statements.len() > 1 {
            return Err(SqlError::new("exactly one statement is allowed"));
        }
        match statements.pop() {
            Some(Statement::Query(q)) => compile_query(*q),
            Some(_) => Err(SqlError::new("only a SELECT query is allowed")),
            None => Err(SqlError::new("the query is empty")),
        }
    }

    /// The group keys' output names, in SELECT order (the metric's one compound group key).
    pub fn group_keys(&self) -> Vec<String> {
        self.groups.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The group keys' names sorted: the order of [`SqlRow::groups`] (as `MetricDef::grain`).
    pub fn grain(&self) -> Vec<String> {
        let mut g = self.group_keys();
        g.sort();
        g
    }

    pub fn aggregate(&self) -> &Aggregate {
        &self.aggregate
    }

    /// Whether `event` passes the query's WHERE (the events [`SqlMetric::evaluate`] aggregates):
    /// what event search reports as an SQL metric the event matched.
    pub fn matches(&self, event: &Event) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| eval_predicate(f, event) == Some(true))
    }

    /// Runs the query over `events` (the caller scopes them to an environment, a customer and a
    /// window). Rows come sorted by group. With no GROUP BY there is always exactly one row, as in
    /// SQL (`COUNT` of nothing is 0, `SUM` of nothing is `NULL`); grouped, only groups that some
    /// matching event formed appear.
    pub fn evaluate<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Vec<SqlRow>, EvalError> {
        // Output columns in grain order: index into `self.groups` sorted by name.
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        order.sort_by(|&a, &b| self.groups[a].0.cmp(&self.groups[b].0));
        let mut states: BTreeMap<GroupValues, AggState> = BTreeMap::new();
        for e in events {
            if let Some(f) = &self.filter {
                if eval_predicate(f, e) != Some(true) {
                    continue;
                }
            }
            let key: GroupValues = order
                .iter()
                .map(|&i| self.groups[i].1.text(e).map(|t| t.as_str().to_owned()))
                .collect();
            if !states.contains_key(&key) && states.len() >= MAX_GROUPS {
                return Err(EvalError::TooManyGroups);
            }
            states.entry(key).or_default().add(&self.aggregate, e)?;
        }
        if self.groups.is_empty() && states.is_empty() {
            states.insert(Vec::new(), AggState::default());
        }
        states
            .into_iter()
            .map(|(groups, st)| {
                Ok(SqlRow {
                    groups,
                    value: st.finish(&self.aggregate)?,
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and compilation

/// The shape every accepted query has besides its projection, WHERE and GROUP BY: whatever else
/// a query carries (HAVING, QUALIFY, TOP, INTO, LATERAL VIEW, ORDER BY, LIMIT, dialect
/// extensions...) makes it differ from this template and is refused, so a clause added by a
/// future parser version is refused too rather than silently ignored.
fn template() -> Query {
    let statements =
        Parser::parse_sql(&GenericDialect {}, "SELECT 1 FROM events").unwrap_or_default();
    match statements.into_iter().next() {
        Some(Statement::Query(q)) => *q,
        // The template is a constant the parser accepts (tested).
        _ => unreachable_template(),
    }
}

#[allow(clippy::panic)] // A constant query the parser accepts; the unit tests parse it.
fn unreachable_template() -> Query {
    panic!("the SQL template failed to parse")
}

fn compile_query(mut query: Query) -> Result<SqlMetric, SqlError> {
    if query.with.is_some() {
        return Err(SqlError::new(
            "WITH (common table expressions) is not allowed",
        ));
    }
    if query.order_by.is_some() {
        return Err(SqlError::new(
            "ORDER BY is not allowed (a metric's groups have no order)",
        ));
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(SqlError::new(
            "LIMIT, OFFSET and FETCH are not allowed (every group is billed)",
        ));
    }
    let template = template();
    // Taken out rather than cloned: a WHERE can be a deep tree.
    let body = core::mem::replace(&mut query.body, template.body.clone());
    if query != template {
        return Err(SqlError::new("unsupported clause in the query"));
    }
    let SetExpr::Select(template_select) = *template.body else {
        return Err(SqlError::new("unsupported query"));
    };
    match *body {
        SetExpr::Select(s) => compile_select(*s, &template_select),
        SetExpr::SetOperation { .. } => {
            Err(SqlError::new("UNION, INTERSECT and EXCEPT are not allowed"))
        }
        SetExpr::Query(_) => Err(SqlError::new("subqueries are not allowed")),
        _ => Err(SqlError::new("only SELECT ... FROM events is allowed")),
    }
}

fn compile_select(mut select: Select, template: &Select) -> Result<SqlMetric, SqlError> {
    if select.distinct.is_some() {
        return Err(SqlError::new(
            "SELECT DISTINCT is not allowed (use COUNT(DISTINCT ...))",
        ));
    }
    if select.having.is_some() {
        return Err(SqlError::new("HAVING is not allowed"));
    }
    if select.qualify.is_some() || !select.named_window.is_empty() {
        return Err(SqlError::new("window functions are not allowed"));
    }
    if select.into.is_some() {
        return Err(SqlError::new("SELECT INTO is not allowed"));
    }
    let Some(template_table) = template.from.first() else {
        return Err(SqlError::new("unsupported query"));
    };
    check_from(&select.from, template_table)?;
    let projection = core::mem::replace(&mut select.projection, template.projection.clone());
    let selection = select.selection.take();
    let group_by = core::mem::replace(&mut select.group_by, template.group_by.clone());
    select.from = template.from.clone();
    if select != *template {
        return Err(SqlError::new("unsupported clause in the SELECT"));
    }
    let (aggregate, groups) = compile_projection(&projection)?;
    check_group_by(&group_by, &groups)?;
    let filter = selection
        .as_ref()
        .map(|w| compile_predicate(w, 0))
        .transpose()?;
    Ok(SqlMetric {
        aggregate,
        filter,
        groups,
    })
}

fn check_from(from: &[TableWithJoins], template: &TableWithJoins) -> Result<(), SqlError> {
    let [table] = from else {
        return Err(match from.len() {
            0 => SqlError::new("the query must read FROM events"),
            _ => SqlError::new("only the events table may be read (no joins)"),
        });
    };
    if !table.joins.is_empty() {
        return Err(SqlError::new("joins are not allowed"));
    }
    match &table.relation {
        TableFactor::Table { name, .. } if !is_events(name) => Err(SqlError::new(format!(
            "only the events table may be read, not {name}"
        ))),
        TableFactor::Table { .. } => {
            // Anything besides the name (an alias, hints, sampling, time travel...) is refused.
            let mut relation = table.relation.clone();
            if let (TableFactor::Table { name, .. }, TableFactor::Table { name: t, .. }) =
                (&mut relation, &template.relation)
            {
                *name = t.clone();
            }
            match relation == template.relation {
                true => Ok(()),
                false => Err(SqlError::new(
                    "only FROM events is allowed (no alias or hints)",
                )),
            }
        }
        TableFactor::Derived { .. } => Err(SqlError::new("subqueries are not allowed")),
        _ => Err(SqlError::new("only FROM events is allowed")),
    }
}

fn is_events(name: &ObjectName) -> bool {
    matches!(name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("events"))
}

type Projection = (Aggregate, Vec<(String, Column)>);

fn compile_projection(items: &[SelectItem]) -> Result<Projection, SqlError> {
    let mut aggregate = None;
    let mut groups: Vec<(String, Column)> = Vec::new();
    for item in items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return Err(SqlError::new(
                    "SELECT * is not allowed: select one aggregate AS value and group columns",
                ))
            }
            _ => return Err(SqlError::new("unsupported SELECT item")),
        };
        if let Expr::Function(f) = expr {
            let agg = compile_aggregate(f)?;
            if !alias.is_some_and(|a| a.value.eq_ignore_ascii_case("value")) {
                return Err(SqlError::new("the aggregate must be named: ... AS value"));
            }
            if aggregate.replace(agg).is_some() {
                return Err(SqlError::new("exactly one aggregate (AS value) is allowed"));
            }
            continue;
        }
        let column = compile_column(expr).map_err(|_| {
            SqlError::new(format!(
                "{expr}: a selected column must be an aggregate AS value or a plain column to group by"
            ))
        })?;
        if matches!(column, Column::Timestamp | Column::TransactionId) {
            return Err(SqlError::new(format!(
                "{expr} cannot be a group key (one group per event)"
            )));
        }
        let name = match alias {
            Some(a) => a.value.clone(),
            None => column.default_name().to_string(),
        };
        if name.is_empty() || name.eq_ignore_ascii_case("value") {
            return Err(SqlError::new(format!(
                "{expr}: only the aggregate may be named value"
            )));
        }
        if groups.iter().any(|(n, _)| *n == name) {
            return Err(SqlError::new(format!("two columns are named {name}")));
        }
        groups.push((name, column));
    }
    if groups.len() > MAX_GROUP_COLUMNS {
        return Err(SqlError::new(format!(
            "at most {MAX_GROUP_COLUMNS} group columns are allowed"
        )));
    }
    let aggregate = aggregate.ok_or_else(|| {
        SqlError::new(
            "the query must select one aggregate AS value (COUNT, SUM, MAX, MIN or AVG); raw rows are not allowed",
        )
    })?;
    Ok((aggregate, groups))
}

/// Every selected group column must be grouped by, and nothing else (by expression or by its
/// output name).
fn check_group_by(group_by: &GroupByExpr, groups: &[(String, Column)]) -> Result<(), SqlError> {
    let exprs = match group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        _ => return Err(SqlError::new("only GROUP BY <columns> is allowed")),
    };
    let mut grouped = BTreeSet::new();
    for e in exprs {
        let by_name = match e {
            Expr::Identifier(i) => groups.iter().position(|(n, _)| *n == i.value),
            _ => None,
        };
        let index = match by_name {
            Some(i) => i,
            None => {
                let column = compile_column(e).map_err(|_| {
                    SqlError::new(format!("GROUP BY {e}: only columns can be grouped by"))
                })?;
                groups
                    .iter()
                    .position(|(_, c)| *c == column)
                    .ok_or_else(|| {
                        SqlError::new(format!("GROUP BY {e}: a grouped column must be selected"))
                    })?
            }
        };
        grouped.insert(index);
    }
    for (i, (name, _)) in groups.iter().enumerate() {
        if !grouped.contains(&i) {
            return Err(SqlError::new(format!(
                "column {name} must appear in GROUP BY"
            )));
        }
    }
    Ok(())
}

fn compile_aggregate(f: &Function) -> Result<Aggregate, SqlError> {
    let name = match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => i.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    if !matches!(name.as_str(), "COUNT" | "SUM" | "MAX" | "MIN" | "AVG") {
        return Err(SqlError::new(format!(
            "function {} is not allowed (allowed: COUNT, SUM, MAX, MIN, AVG)",
            f.name
        )));
    }
    if f.over.is_some() {
        return Err(SqlError::new("window functions are not allowed"));
    }
    if f.filter.is_some()
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || f.uses_odbc_syntax
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(SqlError::new(format!("{name}: unsupported modifier")));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(SqlError::new(format!("{name} takes one column")));
    };
    let distinct = match list.duplicate_treatment {
        Some(DuplicateTreatment::Distinct) => true,
        Some(DuplicateTreatment::All) | None => false,
    };
    if !list.clauses.is_empty() {
        return Err(SqlError::new(format!("{name}: unsupported modifier")));
    }
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(a)] => a,
        _ => return Err(SqlError::new(format!("{name} takes exactly one argument"))),
    };
    let column = match arg {
        FunctionArgExpr::Wildcard if name == "COUNT" && !distinct => {
            return Ok(Aggregate::CountStar)
        }
        FunctionArgExpr::Expr(e) => compile_column(e).map_err(|_| {
            SqlError::new(format!(
                "{name}({e}): the argument must be a column (no expressions or nested functions)"
            ))
        })?,
        _ => return Err(SqlError::new(format!("{name} takes one column"))),
    };
    if distinct && name != "COUNT" {
        return Err(SqlError::new(format!(
            "DISTINCT is allowed only in COUNT, not {name}"
        )));
    }
    if name != "COUNT" && !matches!(column, Column::Property(_)) {
        return Err(SqlError::new(format!(
            "{name} aggregates a numeric property (properties.<name>)"
        )));
    }
    Ok(match (name.as_str(), distinct) {
        ("COUNT", true) => Aggregate::CountDistinct(column),
        ("COUNT", false) => Aggregate::Count(column),
        ("SUM", _) => Aggregate::Sum(column),
        ("MAX", _) => Aggregate::Max(column),
        ("MIN", _) => Aggregate::Min(column),
        _ => Aggregate::Avg(column),
    })
}

/// A column reference: `event_type`, `properties.x`, `properties."x y"`, optionally qualified
/// `events.`.
fn compile_column(e: &Expr) -> Result<Column, SqlError> {
    let parts: &[Ident] = match e {
        Expr::Identifier(i) => core::slice::from_ref(i),
        Expr::CompoundIdentifier(parts) => parts,
        Expr::Nested(inner) => return compile_column(inner),
        _ => return Err(SqlError::new(format!("{e} is not a column"))),
    };
    let parts = match parts {
        [table, rest @ ..] if !rest.is_empty() && table.value.eq_ignore_ascii_case("events") => {
            rest
        }
        _ => parts,
    };
    match parts {
        [c] if c.quote_style.is_none() => match c.value.to_ascii_lowercase().as_str() {
            "event_type" => Ok(Column::EventType),
            "timestamp" => Ok(Column::Timestamp),
            "customer_id" => Ok(Column::CustomerId),
            "transaction_id" => Ok(Column::TransactionId),
            _ => Err(SqlError::new(format!(
                "unknown column {e} (columns: properties.<name>, event_type, timestamp, customer_id, transaction_id)"
            ))),
        },
        [p, name] if p.value.eq_ignore_ascii_case("properties") && !name.value.is_empty() => {
            Ok(Column::Property(name.value.clone()))
        }
        _ => Err(SqlError::new(format!("unknown column {e}"))),
    }
}

fn compile_literal(e: &Expr) -> Result<Literal, SqlError> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(Literal::Text(s.clone())),
            Value::Number(n, false) => parse_decimal(n)
                .map(Literal::Number)
                .ok_or_else(|| SqlError::new(format!("number {n} is out of range"))),
            Value::Null => Ok(Literal::Null),
            _ => Err(SqlError::new(format!(
                "literal {e} is not allowed (use 'text' or a number)"
            ))),
        },
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match compile_literal(expr)? {
            Literal::Number(n) if *op == UnaryOperator::Minus => Ok(Literal::Number(-n)),
            Literal::Number(n) => Ok(Literal::Number(n)),
            _ => Err(SqlError::new(format!("{e}: sign of a non-number"))),
        },
        Expr::Nested(inner) => compile_literal(inner),
        _ => Err(SqlError::new(format!("{e} is not a literal"))),
    }
}

fn compile_operand(e: &Expr) -> Result<Operand, SqlError> {
    if let Ok(l) = compile_literal(e) {
        return Ok(Operand::Literal(l));
    }
    match e {
        Expr::Function(f) => Err(SqlError::new(format!(
            "function {} is not allowed in WHERE (aggregates belong in the value column)",
            f.name
        ))),
        Expr::Subquery(_) | Expr::Exists { .. } => Err(SqlError::new("subqueries are not allowed")),
        _ => compile_column(e).map(Operand::Column).map_err(|err| {
            SqlError::new(format!(
                "{e}: a comparison side must be a column or a literal ({})",
                err.message()
            ))
        }),
    }
}

/// An RFC 3339 literal on the other side of a `timestamp` comparison becomes an instant.
fn time_operands(a: Operand, b: Operand) -> Result<(Operand, Operand), SqlError> {
    let instant = |o: Operand| match o {
        Operand::Literal(Literal::Text(s)) => parse_rfc3339_ms(&s)
            .map(Operand::Instant)
            .map_err(|_| SqlError::new(format!("'{s}' is not an RFC 3339 timestamp"))),
        Operand::Literal(Literal::Null) => Ok(o),
        Operand::Literal(Literal::Number(_)) => Err(SqlError::new(
            "timestamp is compared with an RFC 3339 string such as '2024-01-01T00:00:00Z'",
        )),
        Operand::Column(Column::Timestamp) => Ok(o),
        Operand::Column(_) => Err(SqlError::new(
            "timestamp can only be compared with an RFC 3339 string",
        )),
        Operand::Instant(_) => Ok(o),
    };
    let is_ts = |o: &Operand| matches!(o, Operand::Column(Column::Timestamp));
    match (is_ts(&a), is_ts(&b)) {
        (true, false) => Ok((a, instant(b)?)),
        (false, true) => Ok((instant(a)?, b)),
        _ => Ok((a, b)),
    }
}

fn compile_predicate(e: &Expr, depth: usize) -> Result<Predicate, SqlError> {
    if depth >= MAX_CONDITION_DEPTH {
        return Err(SqlError::new(format!(
            "the WHERE clause nests more than {MAX_CONDITION_DEPTH} conditions deep"
        )));
    }
    let sub = |x: &Expr| compile_predicate(x, depth + 1).map(Box::new);
    match e {
        Expr::Nested(inner) => compile_predicate(inner, depth + 1),
        Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::And => {
                    return Ok(Predicate::And(sub(left)?, sub(right)?))
                }
                BinaryOperator::Or => {
                    return Ok(Predicate::Or(sub(left)?, sub(right)?))
                }
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::NotEq,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::LtEq,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::GtEq,
                _ => return Err(SqlError::new(format!("operator {op} is not allowed"))),
            };
            let (l, r) = time_operands(compile_operand(left)?, compile_operand(right)?)?;
            Ok(Predicate::Compare(l, cmp, r))
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Ok(Predicate::Not(sub(expr)?)),
        Expr::IsNull(x) => Ok(Predicate::IsNull {
            operand: compile_operand(x)?,
            negated: false,
        }),
        Expr::IsNotNull(x) => Ok(Predicate::IsNull {
            operand: compile_operand(x)?,
            negated: true,
        }),
        Expr::In {
            expr,
            target,
            negated,
            global: false,
        } => {
            let list = match target {
                InTarget::List(list) => list,
                InTarget::Subquery(_) => return Err(SqlError::new("subqueries are not allowed")),
                _ => return Err(SqlError::new("IN takes a list of literals")),
            };
            let operand = compile_operand(expr)?;
            let list = list
                .iter()
                .map(|item| {
                    let lit = Operand::Literal(compile_literal(item)?);
                    Ok(time_operands(operand.clone(), lit)?.1)
                })
                .collect::<Result<Vec<_>, SqlError>>()?;
            Ok(Predicate::In {
                operand,
                list,
                negated: *negated,
            })
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let x = compile_operand(expr)?;
            let (x1, lo) = time_operands(x.clone(), compile_operand(low)?)?;
            let (x2, hi) = time_operands(x, compile_operand(high)?)?;
            let inside = Predicate::And(
                Box::new(Predicate::Compare(x1, CmpOp::GtEq, lo)),
                Box::new(Predicate::Compare(x2, CmpOp::LtEq, hi)),
            );
            Ok(match negated {
                true => Predicate::Not(Box::new(inside)),
                false => inside,
            })
        }
        Expr::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: None,
        } => {
            let operand = compile_operand(expr)?;
            let Literal::Text(p) = compile_literal(pattern)? else {
                return Err(SqlError::new("LIKE takes a 'pattern' string"));
            };
            Ok(Predicate::Like {
                operand,
                pattern: p.chars().collect(),
                negated: *negated,
            })
        }
        Expr::Subquery(_) | Expr::Exists { .. } => {
            Err(SqlError::new("subqueries are not allowed"))
        }
        Expr::Function(f) => Err(SqlError::new(format!(
            "function {} is not allowed in WHERE",
            f.name
        ))),
        _ => Err(SqlError::new(format!(
            "{e}: unsupported condition (allowed: comparisons, AND, OR, NOT, IN, IS NULL, LIKE, BETWEEN)"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// An operand's value for one event.
enum Val<'a> {
    Null,
    /// A column's text.
    Column(Text<'a>),
    /// A `'text'` literal.
    Str(&'a str),
    Number(Decimal),
    Instant(i64),
}

fn operand_value<'a>(o: &'a Operand, e: &'a Event) -> Val<'a> {
    match o {
        Operand::Column(Column::Timestamp) => Val::Instant(e.timestamp_ms),
        Operand::Column(c) => c.text(e).map_or(Val::Null, Val::Column),
        Operand::Literal(Literal::Text(s)) => Val::Str(s),
        Operand::Literal(Literal::Number(n)) => Val::Number(*n),
        Operand::Literal(Literal::Null) => Val::Null,
        Operand::Instant(ms) => Val::Instant(*ms),
    }
}

/// Compares two values; `None` = unknown. The literal's type decides: against a number literal a
/// value is compared as a number (unknown when it is not one), against a `'text'` literal as text
/// (by bytes). Two columns compare as numbers when both are numbers, as text otherwise. Instants
/// (`timestamp` and its RFC 3339 bounds) compare by time. `NULL` makes any comparison unknown.
fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let number = |v: &Val<'_>| match v {
        Val::Number(n) => Some(*n),
        Val::Column(t) => parse_decimal(t.as_str()),
        Val::Str(s) => parse_decimal(s),
        _ => None,
    };
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Instant(x), Val::Instant(y)) => Some(x.cmp(y)),
        (Val::Instant(_), _) | (_, Val::Instant(_)) => None,
        (Val::Number(_), _) | (_, Val::Number(_)) => Some(number(a)?.cmp(&number(b)?)),
        (Val::Column(x), Val::Column(y)) => match (number(a), number(b)) {
            (Some(p), Some(q)) => Some(p.cmp(&q)),
            _ => Some(x.as_str().cmp(y.as_str())),
        },
        (Val::Column(x), Val::Str(y)) => Some(x.as_str().cmp(y)),
        (Val::Str(x), Val::Column(y)) => Some((*x).cmp(y.as_str())),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
    }
}

fn compare_with(a: &Operand, op: CmpOp, b: &Operand, e: &Event) -> Option<bool> {
    let ord = compare(&operand_value(a, e), &operand_value(b, e))?;
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::NotEq => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::LtEq => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::GtEq => ord != Ordering::Less,
    })
}

/// SQL's three-valued logic: `None` = unknown.
fn eval_predicate(p: &Predicate, e: &Event) -> Option<bool> {
    match p {
        Predicate::And(a, b) => match (eval_predicate(a, e), eval_predicate(b, e)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Predicate::Or(a, b) => match (eval_predicate(a, e), eval_predicate(b, e)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Predicate::Not(a) => eval_predicate(a, e).map(|v| !v),
        Predicate::Compare(a, op, b) => compare_with(a, *op, b, e),
        Predicate::In {
            operand,
            list,
            negated,
        } => {
            // x IN (a, b) = x = a OR x = b; unknown when no item matched and some was unknown.
            let mut unknown = false;
            let mut found = false;
            for item in list {
                match compare_with(operand, CmpOp::Eq, item, e) {
                    Some(true) => {
                        found = true;
                        break;
                    }
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            let r = if found {
                Some(true)
            } else if unknown {
                None
            } else {
                Some(false)
            };
            r.map(|v| v != *negated)
        }
        Predicate::IsNull { operand, negated } => {
            let null = matches!(operand_value(operand, e), Val::Null);
            Some(null != *negated)
        }
        Predicate::Like {
            operand,
            pattern,
            negated,
        } => {
            let text: Vec<char> = match operand_value(operand, e) {
                Val::Null => return None,
                Val::Column(t) => t.as_str().chars().collect(),
                Val::Str(s) => s.chars().collect(),
                Val::Number(n) => n.to_string().chars().collect(),
                Val::Instant(ms) => format_rfc3339_ms(ms).chars().collect(),
            };
            Some(like(&text, pattern) != *negated)
        }
    }
}

/// `LIKE` matching (`%` = any run, `_` = one character), iterative with one backtrack point, so
/// its cost is O(text × pattern) at worst.
fn like(text: &[char], pattern: &[char]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || (pattern[p] != '%' && pattern[p] == text[t]))
        {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

/// The running state of one group's aggregate.
#[derive(Default)]
struct AggState {
    rows: u64,
    numbers: u64,
    sum: Option<Decimal>,
    extreme: Option<Decimal>,
    distinct: BTreeSet<String>,
}

impl AggState {
    fn add(&mut self, agg: &Aggregate, e: &Event) -> Result<(), EvalError> {
        let number = |c: &Column| c.text(e).and_then(|t| parse_decimal(t.as_str()));
        match agg {
            Aggregate::CountStar => self.rows += 1,
            Aggregate::Count(c) => {
                if c.text(e).is_some() {
                    self.rows += 1;
                }
            }
            Aggregate::CountDistinct(c) => {
                if let Some(t) = c.text(e) {
                    if !self.distinct.contains(t.as_str()) {
                        self.distinct.insert(t.as_str().to_owned());
                    }
                }
            }
            Aggregate::Sum(c) | Aggregate::Avg(c) => {
                if let Some(n) = number(c) {
                    self.numbers += 1;
                    self.sum = Some(match self.sum {
                        Some(s) => add_exact(s, n).ok_or(EvalError::Overflow)?,
                        None => n,
                    });
                }
            }
            Aggregate::Max(c) => {
                if let Some(n) = number(c) {
                    self.extreme = Some(self.extreme.map_or(n, |m| m.max(n)));
                }
            }
            Aggregate::Min(c) => {
                if let Some(n) = number(c) {
                    self.extreme = Some(self.extreme.map_or(n, |m| m.min(n)));
                }
            }
        }
        Ok(())
    }

    fn finish(self, agg: &Aggregate) -> Result<Option<Decimal>, EvalError> {
        Ok(match agg {
            Aggregate::CountStar | Aggregate::Count(_) => Some(Decimal::from(self.rows)),
            Aggregate::CountDistinct(_) => Some(Decimal::from(self.distinct.len())),
            Aggregate::Sum(_) => self.sum,
            Aggregate::Max(_) | Aggregate::Min(_) => self.extreme,
            Aggregate::Avg(_) => match self.sum {
                None => None,
                Some(s) => Some(average(s, self.numbers).ok_or(EvalError::Overflow)?),
            },
        })
    }
}

/// `sum / count`: exact when the quotient terminates, else rounded half-even to
/// [`AVG_DECIMAL_PLACES`] (or to as many places as the integer part leaves room for).
fn average(sum: Decimal, count: u64) -> Option<Decimal> {
    let count = Decimal::from(count);
    (0..=AVG_DECIMAL_PLACES)
        .rev()
        .find_map(|places| div_round_half_even(sum, count, places))
}

#[cfg(test)]
#[path = "sql_metric_tests.rs"]
mod tests;
