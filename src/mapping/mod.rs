//! Field mappings: a typed DSL (`source path → ops → target`) that turns one external record into
//! the typed columns of `external_contacts`, `external_tickets` or `external_deals`.
//!
//! Pure domain code: no SQL, no I/O. Mappings are JSON in `integration_field_mappings`, validated
//! when written ([`compile`]) and never interpolated into SQL: targets are checked against a fixed
//! list of columns, and values go to the database as bound parameters.

pub mod ops;
pub mod path;
pub mod presets;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{DataType, SourceType};
use ops::{DEFAULT_DATE_FORMATS, Op, OpSpec, Step, Val, date_format, parse_date, parse_number};
use path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Timestamp,
    /// `numeric(p, s)`: at most `p - s` digits before the point.
    Numeric {
        integer_digits: i32,
    },
    Date,
    Bool,
}

impl ColumnType {
    /// The SQL type a column's canonical text is cast to.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Timestamp => "timestamptz",
            ColumnType::Numeric { .. } => "numeric",
            ColumnType::Date => "date",
            ColumnType::Bool => "boolean",
        }
    }
}

use ColumnType::{Bool, Date, Numeric, Text, Timestamp};

/// The mappable columns of each target table, in the order rows carry them.
pub fn columns(data_type: DataType) -> &'static [(&'static str, ColumnType)] {
    match data_type {
        DataType::Contacts => &[
            ("email", Text),
            ("first_name", Text),
            ("last_name", Text),
            ("full_name", Text),
            ("phone", Text),
            ("title", Text),
            ("company_name", Text),
            ("lifecycle_stage", Text),
            ("source_created_at", Timestamp),
            ("source_updated_at", Timestamp),
        ],
        DataType::Tickets => &[
            ("ticket_number", Text),
            ("subject", Text),
            ("description", Text),
            ("status", Text),
            ("priority", Text),
            ("ticket_type", Text),
            ("channel", Text),
            ("requester_email", Text),
            ("requester_name", Text),
            ("assignee", Text),
            ("opened_at", Timestamp),
            ("closed_at", Timestamp),
            ("due_at", Timestamp),
            ("source_created_at", Timestamp),
            ("source_updated_at", Timestamp),
        ],
        DataType::Deals => &[
            ("name", Text),
            ("amount", Numeric { integer_digits: 16 }),
            ("currency", Text),
            ("stage", Text),
            ("pipeline", Text),
            ("probability", Numeric { integer_digits: 3 }),
            ("close_date", Date),
            ("is_closed", Bool),
            ("is_won", Bool),
            ("deal_type", Text),
            ("owner_name", Text),
            ("owner_email", Text),
            ("company_name", Text),
            ("company_domain", Text),
            ("contact_email", Text),
            ("source_created_at", Timestamp),
            ("source_updated_at", Timestamp),
        ],
    }
}

/// Where a mapped value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    ExternalId,
    Column(usize),
    Property(String),
}

pub const EXTERNAL_ID: &str = "external_id";

pub fn parse_target(data_type: DataType, name: &str) -> Result<Target, String> {
    if name == EXTERNAL_ID {
        return Ok(Target::ExternalId);
    }
    if let Some(key) = name.strip_prefix("properties.") {
        if key.is_empty() {
            return Err("`properties.` needs a key".into());
        }
        return Ok(Target::Property(key.to_string()));
    }
    columns(data_type)
        .iter()
        .position(|(c, _)| *c == name)
        .map(Target::Column)
        .ok_or_else(|| {
            format!(
                "unknown target `{name}` for {data_type}; use external_id, properties.<key>, or one of: {}",
                columns(data_type)
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// One mapping as stored: where to read, and what to do to the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// No source: the value starts missing (for `const`, `coalesce`, `concat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpSpec>,
}

#[derive(Debug, Clone)]
struct Field {
    target_name: String,
    target: Target,
    source: Option<Path>,
    ops: Vec<Op>,
}

/// A problem with a mapping definition (answered as 422 when written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingProblem {
    pub target: String,
    pub message: String,
}

/// The compiled mappings of one integration and data type.
#[derive(Debug, Clone)]
pub struct MappingSet {
    data_type: DataType,
    fields: Vec<Field>,
}

/// Validates one stored mapping.
pub fn compile_field(
    data_type: DataType,
    target: &str,
    mapping: &Value,
) -> Result<(), MappingProblem> {
    field(data_type, target, mapping).map(|_| ())
}

fn field(data_type: DataType, target: &str, mapping: &Value) -> Result<Field, MappingProblem> {
    let problem = |message: String| MappingProblem {
        target: target.to_string(),
        message,
    };
    // PostgreSQL text and jsonb cannot hold NUL: such a mapping could never be stored.
    if target.contains('\0') || mapping.to_string().contains("\\u0000") {
        return Err(problem(
            "a NUL character (\\u0000) in the target or the mapping cannot be stored".into(),
        ));
    }
    let spec: FieldSpec = serde_json::from_value(mapping.clone())
        .map_err(|e| problem(format!("invalid mapping: {e}")))?;
    Ok(Field {
        target_name: target.to_string(),
        target: parse_target(data_type, target).map_err(&problem)?,
        source: spec
            .source
            .as_deref()
            .map(Path::parse)
            .transpose()
            .map_err(&problem)?,
        ops: spec
            .ops
            .iter()
            .map(OpSpec::compile)
            .collect::<Result<_, _>>()
            .map_err(&problem)?,
    })
}

/// The preset of `source` for `data_type`, with `stored` mappings (target, mapping JSON, enabled)
/// replacing or adding targets; a disabled stored row removes its target.
pub fn compile(
    source: SourceType,
    data_type: DataType,
    stored: &[(String, Value, bool)],
) -> Result<MappingSet, Vec<MappingProblem>> {
    let mut specs: Vec<(String, Option<Value>)> = presets::preset(source, data_type)
        .into_iter()
        .map(|(t, v)| (t, Some(v)))
        .collect();
    for (target, mapping, enabled) in stored {
        let replacement = enabled.then(|| mapping.clone());
        match specs.iter_mut().find(|(t, _)| t == target) {
            Some(slot) => slot.1 = replacement,
            None => specs.push((target.clone(), replacement)),
        }
    }
    let mut fields = Vec::new();
    let mut problems = Vec::new();
    for (target, mapping) in specs {
        if let Some(mapping) = mapping {
            match field(data_type, &target, &mapping) {
                Ok(f) => fields.push(f),
                Err(p) => problems.push(p),
            }
        }
    }
    if !fields.iter().any(|f| f.target == Target::ExternalId) {
        problems.push(MappingProblem {
            target: EXTERNAL_ID.into(),
            message: "a mapping for external_id is required".into(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The external id first: its errors name the record in every other error.
    fields.sort_by_key(|f| f.target != Target::ExternalId);
    Ok(MappingSet { data_type, fields })
}

/// A per-record error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// A record in the target table's shape: each column as canonical text (cast by the database).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappedRecord {
    pub external_id: String,
    pub columns: Vec<Option<String>>,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Mapped(MappedRecord),
    Skipped,
    Failed {
        external_id: Option<String>,
        errors: Vec<FieldError>,
    },
}

impl MappingSet {
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// Maps one record. Never panics, whatever the record holds.
    pub fn apply(&self, record: &Value) -> Outcome {
        let cols = columns(self.data_type);
        let mut out = MappedRecord {
            external_id: String::new(),
            columns: vec![None; cols.len()],
            properties: Map::new(),
        };
        let mut errors = Vec::new();
        let mut external_id = None;
        for field in &self.fields {
            let mut value = match &field.source {
                Some(p) => Val::from_found(p.get(record)),
                None => Val::Missing,
            };
            let mut failed = false;
            for op in &field.ops {
                match op.apply(value, record) {
                    Ok(Step::Continue(v)) => value = v,
                    Ok(Step::SkipRecord) => return Outcome::Skipped,
                    Err(e) => {
                        errors.push(FieldError {
                            field: field.target_name.clone(),
                            code: e.code,
                            message: e.message,
                        });
                        failed = true;
                        value = Val::Null;
                        break;
                    }
                }
            }
            if failed {
                continue;
            }
            match &field.target {
                Target::ExternalId => match scalar_text(&value) {
                    Some(id) if !id.trim().is_empty() => external_id = Some(id),
                    _ => errors.push(FieldError {
                        field: EXTERNAL_ID.into(),
                        code: "missing_external_id",
                        message: "the record has no external id".into(),
                    }),
                },
                Target::Column(i) => match canonical(&value, cols[*i].1) {
                    Ok(v) => out.columns[*i] = v,
                    Err((code, message)) => errors.push(FieldError {
                        field: field.target_name.clone(),
                        code,
                        message,
                    }),
                },
                Target::Property(key) => {
                    if let Val::Value(v) = value {
                        out.properties.insert(key.clone(), v);
                    } else if matches!(value, Val::Null) {
                        out.properties.insert(key.clone(), Value::Null);
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Outcome::Failed {
                external_id,
                errors,
            };
        }
        out.external_id = external_id.unwrap_or_default();
        Outcome::Mapped(out)
    }
}

fn scalar_text(value: &Val) -> Option<String> {
    match value {
        Val::Value(Value::String(s)) => Some(s.clone()),
        Val::Value(Value::Number(n)) => Some(n.to_string()),
        Val::Value(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// The value as the column's canonical text; blank strings become NULL in typed columns.
fn canonical(value: &Val, ty: ColumnType) -> Result<Option<String>, (&'static str, String)> {
    let v = match value {
        Val::Missing | Val::Null => return Ok(None),
        Val::Value(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Val::Value(v) => v,
    };
    match ty {
        Text => match v {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok(Some(v.to_string())),
            other => Err((
                "not_text",
                format!(
                    "an object or array cannot fill a text column: {}",
                    truncate(&other.to_string())
                ),
            )),
        },
        Numeric { .. } => match v {
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::String(s) => parse_number(s)
                .map(|n| Some(n.to_string()))
                .ok_or_else(|| ("not_a_number", format!("{s:?} is not a number"))),
            other => Err((
                "not_a_number",
                format!("{} is not a number", truncate(&other.to_string())),
            )),
        },
        Bool => match v {
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::String(s) => match s.trim().to_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some("true".into())),
                "false" | "0" | "no" => Ok(Some("false".into())),
                _ => Err(("not_a_bool", format!("{s:?} is not a boolean"))),
            },
            other => Err((
                "not_a_bool",
                format!("{} is not a boolean", truncate(&other.to_string())),
            )),
        },
        Timestamp | Date => {
            let formats: Vec<_> = DEFAULT_DATE_FORMATS
                .iter()
                .filter_map(|f| date_format(f).ok())
                .collect();
            let parsed = match v {
                // Epoch numbers: seconds unless too large to be seconds.
                Value::Number(n) => n.as_i64().and_then(|i| {
                    if i.abs() >= 100_000_000_000 {
                        chrono::DateTime::from_timestamp_millis(i)
                    } else {
                        chrono::DateTime::from_timestamp(i, 0)
                    }
                }),
                Value::String(s) => parse_date(s, &formats),
                _ => None,
            }
            .ok_or_else(|| {
                (
                    "invalid_date",
                    format!("{} is not a date", truncate(&v.to_string())),
                )
            })?;
            Ok(Some(if ty == Date {
                parsed.date_naive().to_string()
            } else {
                parsed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            }))
        }
    }
}

/// Longest value, in bytes, of the external id and of the text columns that are indexed (a B-tree
/// entry holds at most ~2,700 bytes; PostgreSQL refuses the whole statement beyond it).
pub const MAX_INDEXED_TEXT_BYTES: usize = 1_000;

/// The text columns whose values (or values derived from them) are indexed.
fn indexed(data_type: DataType, column: &str) -> bool {
    matches!(
        (data_type, column),
        (DataType::Contacts, "email")
            | (DataType::Tickets, "status" | "requester_email")
            | (DataType::Deals, "stage")
    )
}

/// What PostgreSQL would refuse in a mapped record, as per-record errors: a NUL character in text
/// or in `properties` (text and jsonb cannot hold it), a date outside years 1–9999, a number too
/// large for its `numeric` column, an over-long external id or indexed text. Checked before the
/// bulk insert so that one record cannot fail the statement of its whole chunk.
pub fn storable(data_type: DataType, record: &MappedRecord) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut error = |field: &str, code: &'static str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            code,
            message,
        })
    };
    if record.external_id.contains('\0') {
        error(
            EXTERNAL_ID,
            "nul_character",
            "the external id contains a NUL character".into(),
        );
    }
    if record.external_id.len() > MAX_INDEXED_TEXT_BYTES {
        error(
            EXTERNAL_ID,
            "value_too_long",
            format!(
                "the external id has {} bytes; at most {MAX_INDEXED_TEXT_BYTES} are stored",
                record.external_id.len()
            ),
        );
    }
    for ((name, ty), value) in columns(data_type).iter().zip(&record.columns) {
        let Some(value) = value else { continue };
        match ty {
            Text => {
                if value.contains('\0') {
                    error(
                        name,
                        "nul_character",
                        format!("`{name}` contains a NUL character"),
                    );
                } else if value.len() > MAX_INDEXED_TEXT_BYTES && indexed(data_type, name) {
                    error(
                        name,
                        "value_too_long",
                        format!(
                            "`{name}` has {} bytes; this column holds at most {MAX_INDEXED_TEXT_BYTES}",
                            value.len()
                        ),
                    );
                }
            }
            Timestamp | Date => {
                // The canonical text starts with the year: four digits for 0000–9999, a sign
                // beyond. PostgreSQL has no year 0 and no five-digit years in this format.
                let year = value
                    .get(..4)
                    .filter(|_| value.as_bytes().get(4) == Some(&b'-'));
                if !year.is_some_and(|y| y.bytes().all(|b| b.is_ascii_digit()) && y != "0000") {
                    error(
                        name,
                        "date_out_of_range",
                        format!(
                            "`{name}` {} is outside the years 1 to 9999",
                            truncate(value)
                        ),
                    );
                }
            }
            Numeric { integer_digits } => {
                let fits = value
                    .parse::<f64>()
                    .is_ok_and(|n| n.is_finite() && n.abs() < 10f64.powi(*integer_digits));
                if !fits {
                    error(
                        name,
                        "number_out_of_range",
                        format!(
                            "`{name}` {} does not fit: at most {integer_digits} digits before the point",
                            truncate(value)
                        ),
                    );
                }
            }
            Bool => {}
        }
    }
    for (key, value) in &record.properties {
        if key.contains('\0') || holds_nul(value) {
            error(
                &format!("properties.{}", key.replace('\0', "\u{fffd}")),
                "nul_character",
                format!(
                    "property `{}` contains a NUL character",
                    truncate(&key.replace('\0', "\u{fffd}"))
                ),
            );
        }
    }
    errors
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// What a dry run of mappings found: one result per record, until the results reached their
/// byte budget; the records after that are only counted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preview {
    pub results: Vec<Value>,
    /// Records not shown: the results before them reached the budget.
    pub omitted: usize,
}

/// A dry run of an integration's mappings over sample records: the mapped rows and errors, as
/// long as their JSON stays within `max_bytes`. Mappings can make more than they are given (a
/// 1 KB mapping once turned one 1 MiB field into a 100 MiB answer), so the answer is bounded by
/// what it holds, not by what was sent; a record whose result alone exceeds the budget shows as
/// `too_large` with its size.
pub fn preview(set: &MappingSet, records: &[Value], max_bytes: usize) -> Preview {
    let cols = columns(set.data_type());
    let mut preview = Preview {
        results: Vec::new(),
        omitted: 0,
    };
    let mut used = 0;
    for (i, record) in records.iter().enumerate() {
        let result = match set.apply(record) {
            Outcome::Mapped(m) => {
                let mut row = serde_json::Map::new();
                row.insert("external_id".into(), serde_json::json!(m.external_id));
                for (i, (name, _)) in cols.iter().enumerate() {
                    row.insert((*name).into(), serde_json::json!(m.columns[i]));
                }
                row.insert("properties".into(), Value::Object(m.properties));
                serde_json::json!({"outcome": "mapped", "row": row})
            }
            Outcome::Skipped => serde_json::json!({"outcome": "skipped"}),
            Outcome::Failed {
                external_id,
                errors,
            } => {
                serde_json::json!({"outcome": "failed", "external_id": external_id, "errors": errors})
            }
        };
        let mut size = result.to_string().len();
        let result = if size > max_bytes {
            let named = serde_json::json!({"outcome": "too_large", "bytes": size});
            size = named.to_string().len();
            named
        } else {
            result
        };
        if used + size > max_bytes {
            preview.omitted = records.len() - i;
            break;
        }
        used += size;
        preview.results.push(result);
    }
    preview
}

#[cfg(test)]
mod nul_tests {
    use super::*;

    #[test]
    fn a_nul_in_a_target_or_a_constant_is_a_mapping_problem() {
        let ok = serde_json::json!({"source": "email"});
        assert!(compile_field(DataType::Contacts, "email", &ok).is_ok());
        let problem = compile_field(DataType::Contacts, "properties.a\0b", &ok).unwrap_err();
        assert!(problem.message.contains("NUL"), "{}", problem.message);
        let constant =
            serde_json::json!({"source": "title", "ops": [{"op": "default", "value": "x"}]});
        assert!(compile_field(DataType::Contacts, "title", &constant).is_ok());
        let constant =
            serde_json::json!({"source": "title", "ops": [{"op": "default", "value": "x\u{0}y"}]});
        let problem = compile_field(DataType::Contacts, "title", &constant).unwrap_err();
        assert!(problem.message.contains("NUL"), "{}", problem.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies one custom mapping for `target` to `record`.
    fn map(target: &str, mapping: Value, record: Value) -> Outcome {
        let set = compile(
            SourceType::Custom,
            DataType::Contacts,
            &[(target.to_string(), mapping, true)],
        )
        .unwrap();
        set.apply(&record)
    }

    fn column(outcome: &Outcome, name: &str) -> Option<String> {
        match outcome {
            Outcome::Mapped(m) => m.columns[columns(DataType::Contacts)
                .iter()
                .position(|(c, _)| *c == name)
                .unwrap()]
            .clone(),
            other => panic!("not mapped: {other:?}"),
        }
    }

    fn prop_of(mapping: Value, record: Value) -> Value {
        match map("properties.x", mapping, record) {
            Outcome::Mapped(m) => m.properties.get("x").cloned().unwrap_or(json!("<absent>")),
            other => json!(format!("{other:?}")),
        }
    }

    fn error_code(outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::Failed { errors, .. } => errors[0].code,
            other => panic!("did not fail: {other:?}"),
        }
    }

    #[test]
    fn missing_null_and_empty_are_distinct() {
        let default = json!({"source": "v", "ops": [{"op": "default", "value": "d"}]});
        assert_eq!(prop_of(default.clone(), json!({"id": 1})), json!("d"));
        assert_eq!(
            prop_of(default.clone(), json!({"id": 1, "v": null})),
            json!("d")
        );
        assert_eq!(
            prop_of(default.clone(), json!({"id": 1, "v": ""})),
            json!("")
        );
        let when_empty =
            json!({"source": "v", "ops": [{"op": "default", "value": "d", "when_empty": true}]});
        assert_eq!(prop_of(when_empty, json!({"id": 1, "v": " "})), json!("d"));
        // Without ops: a missing value is absent, a null is null.
        assert_eq!(
            prop_of(json!({"source": "v"}), json!({"id": 1})),
            json!("<absent>")
        );
        assert_eq!(
            prop_of(json!({"source": "v"}), json!({"id": 1, "v": null})),
            Value::Null
        );
    }

    #[test]
    fn casts_accept_the_sources_spellings() {
        let n = |v: Value| {
            prop_of(
                json!({"source": "v", "ops": [{"op": "to_number"}]}),
                json!({"id": 1, "v": v}),
            )
        };
        assert_eq!(n(json!("48000")), json!(48000));
        assert_eq!(n(json!("1,250.50")), json!(1250.5));
        assert_eq!(n(json!("")), Value::Null);
        assert_eq!(n(json!(true)), json!(1));
        assert!(n(json!("abc")).as_str().unwrap().contains("not_a_number"));
        let i = |v: Value| {
            prop_of(
                json!({"source": "v", "ops": [{"op": "to_int"}]}),
                json!({"id": 1, "v": v}),
            )
        };
        assert_eq!(i(json!("42.0")), json!(42));
        assert!(i(json!("4.5")).as_str().unwrap().contains("not_an_integer"));
        let b = |v: Value| {
            prop_of(
                json!({"source": "v", "ops": [{"op": "to_bool"}]}),
                json!({"id": 1, "v": v}),
            )
        };
        assert_eq!(
            (b(json!("TRUE")), b(json!("no")), b(json!(0))),
            (json!(true), json!(false), json!(false))
        );
        let s = |v: Value| {
            prop_of(
                json!({"source": "v", "ops": [{"op": "to_string"}]}),
                json!({"id": 1, "v": v}),
            )
        };
        assert_eq!((s(json!(7)), s(json!(false))), (json!("7"), json!("false")));
    }

    #[test]
    fn dates_try_formats_in_order_and_end_in_utc() {
        let d = |v: Value, formats: Value| {
            prop_of(
                json!({"source": "v", "ops": [{"op": "date", "formats": formats}]}),
                json!({"id": 1, "v": v}),
            )
        };
        let all = json!([]);
        assert_eq!(
            d(json!("2024-03-11T14:45:22+05:30"), all.clone()),
            json!("2024-03-11T09:15:22Z")
        );
        assert_eq!(
            d(json!("2024-03-11T09:15:22.481+0000"), all.clone()),
            json!("2024-03-11T09:15:22.481Z")
        );
        assert_eq!(
            d(json!("2024-05-15"), all.clone()),
            json!("2024-05-15T00:00:00Z")
        );
        assert_eq!(
            d(json!(1709213400), json!(["epoch_s"])),
            json!("2024-02-29T13:30:00Z")
        );
        assert_eq!(
            d(json!("1709213400000"), json!(["epoch_ms"])),
            json!("2024-02-29T13:30:00Z")
        );
        assert_eq!(
            d(json!("11/03/2024"), json!(["%d/%m/%Y"])),
            json!("2024-03-11T00:00:00Z")
        );
        assert!(
            d(json!("yesterday"), all)
                .as_str()
                .unwrap()
                .contains("invalid_date")
        );
        assert!(
            compile(
                SourceType::Custom,
                DataType::Contacts,
                &[(
                    "source_created_at".into(),
                    json!({"source": "v", "ops": [{"op": "date", "formats": ["iso-ish"]}]}),
                    true
                )]
            )
            .is_err()
        );
    }

    #[test]
    fn text_ops_enum_maps_and_paths() {
        let r = json!({"id": 1, "name": "  Dana Lee ", "email": "Dana+x@EU.Northwind.io",
                       "custom_fields": [{"id": 123, "value": "gold"}], "status": "Won"});
        let p = |m: Value| prop_of(m, r.clone());
        assert_eq!(
            p(json!({"source": "name", "ops": [{"op": "trim"}, {"op": "uppercase"}]})),
            json!("DANA LEE")
        );
        assert_eq!(
            p(
                json!({"source": "name", "ops": [{"op": "trim"}, {"op": "split", "separator": " ", "index": -1}]})
            ),
            json!("Lee")
        );
        assert_eq!(
            p(json!({"source": "email", "ops": [{"op": "email_domain"}]})),
            json!("eu.northwind.io")
        );
        assert_eq!(
            p(json!({"source": "custom_fields[id=123].value"})),
            json!("gold")
        );
        assert_eq!(
            p(
                json!({"ops": [{"op": "concat", "paths": ["status", "missing", "custom_fields[0].value"], "separator": "/"}]})
            ),
            json!("Won/gold")
        );
        assert_eq!(
            p(
                json!({"source": "missing", "ops": [{"op": "coalesce", "paths": ["nope", "status"]}]})
            ),
            json!("Won")
        );
        assert_eq!(p(json!({"ops": [{"op": "const", "value": 3}]})), json!(3));
        assert_eq!(
            p(json!({"source": "email", "ops": [{"op": "regex_extract", "pattern": "^([^+@]+)"}]})),
            json!("Dana")
        );
        assert_eq!(
            p(
                json!({"source": "email", "ops": [{"op": "regex_replace", "pattern": "\\+[^@]*", "replacement": ""}, {"op": "lowercase"}]})
            ),
            json!("dana@eu.northwind.io")
        );
        assert_eq!(
            p(json!({"source": "status", "ops": [{"op": "hash"}]}))
                .as_str()
                .unwrap()
                .len(),
            64
        );
        let enum_map = |on: &str| {
            p(
                json!({"source": "status", "ops": [{"op": "enum_map", "map": {"Lost": "closed_lost"}, "on_unmapped": on, "default": "other"}]}),
            )
        };
        assert_eq!(enum_map("passthrough"), json!("Won"));
        assert_eq!(enum_map("default"), json!("other"));
        assert_eq!(enum_map("null"), Value::Null);
        assert!(
            enum_map("error")
                .as_str()
                .unwrap()
                .contains("unmapped_value")
        );
        assert_eq!(
            p(
                json!({"source": "status", "ops": [{"op": "enum_map", "case_insensitive": true, "map": {"WON": true}}]})
            ),
            json!(true)
        );
    }

    #[test]
    fn validators_and_filters() {
        let r = json!({"id": 1, "email": "not-an-email", "code": "abcdef", "kind": "bot"});
        assert_eq!(
            error_code(map(
                "email",
                json!({"source": "email", "ops": [{"op": "is_email"}]}),
                r.clone()
            )),
            "invalid_email"
        );
        assert_eq!(
            error_code(map(
                "title",
                json!({"source": "missing", "ops": [{"op": "required"}]}),
                r.clone()
            )),
            "required"
        );
        assert_eq!(
            error_code(map(
                "title",
                json!({"source": "code", "ops": [{"op": "max_len", "max": 3}]}),
                r.clone()
            )),
            "too_long"
        );
        assert_eq!(
            error_code(map(
                "title",
                json!({"source": "kind", "ops": [{"op": "one_of", "values": ["human"]}]}),
                r.clone()
            )),
            "not_allowed"
        );
        assert_eq!(
            map(
                "properties.k",
                json!({"source": "kind", "ops": [{"op": "skip_if", "equals": "bot"}]}),
                r.clone()
            ),
            Outcome::Skipped
        );
        assert_eq!(
            map(
                "properties.k",
                json!({"source": "nope", "ops": [{"op": "skip_if", "missing": true}]}),
                r.clone()
            ),
            Outcome::Skipped
        );
        assert!(matches!(
            map(
                "properties.k",
                json!({"source": "kind", "ops": [{"op": "skip_if", "not_equals": "bot"}]}),
                r
            ),
            Outcome::Mapped(_)
        ));
    }

    #[test]
    fn typed_columns_are_canonical_and_blank_is_null() {
        let r = json!({"id": 1, "email": "", "source_created_at": 1709213400, "phone": 4930123});
        let out = map("title", json!({"source": "email"}), r);
        assert_eq!(column(&out, "email"), None);
        assert_eq!(column(&out, "title"), None);
        assert_eq!(column(&out, "phone").as_deref(), Some("4930123"));
        assert_eq!(
            column(&out, "source_created_at").as_deref(),
            Some("2024-02-29T13:30:00Z")
        );
    }

    #[test]
    fn bad_definitions_are_refused_naming_the_problem() {
        let problems = |target: &str, mapping: Value| {
            compile(
                SourceType::Custom,
                DataType::Contacts,
                &[(target.to_string(), mapping, true)],
            )
            .unwrap_err()
        };
        let p = problems("nonsense", json!({"source": "x"}));
        assert!(p[0].message.contains("unknown target `nonsense`"), "{p:?}");
        let p = problems("title", json!({"source": "x", "ops": [{"op": "explode"}]}));
        assert!(p[0].message.contains("explode"), "{p:?}");
        let p = problems(
            "title",
            json!({"source": "x", "ops": [{"op": "regex_extract", "pattern": "("}]}),
        );
        assert!(p[0].message.contains("bad regex"), "{p:?}");
        let p = problems("title", json!({"source": "a[", "ops": []}));
        assert!(p[0].message.contains("path"), "{p:?}");
        assert!(
            compile(
                SourceType::Custom,
                DataType::Contacts,
                &[("external_id".into(), json!({}), false)]
            )
            .unwrap_err()
            .iter()
            .any(|p| p.message.contains("external_id is required"))
        );
    }

    #[test]
    fn every_preset_compiles() {
        for source in SourceType::ALL {
            for data_type in DataType::ALL {
                compile(*source, *data_type, &[])
                    .unwrap_or_else(|p| panic!("{source} {data_type}: {p:?}"));
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|i| json!(i)),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
                ".{0,40}".prop_map(Value::String),
                "[0-9]{1,14}".prop_map(Value::String),
                "(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9](T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-][0-9]{4}))?".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Whatever a source sends, every preset maps, skips or fails it: never panics.
            #[test]
            fn presets_never_panic(record in json_value(), fields in proptest::collection::btree_map(
                prop_oneof![Just("id".to_string()), Just("email".to_string()), Just("properties".to_string()),
                            Just("fields".to_string()), Just("Amount".to_string()), "[a-zA-Z_]{1,10}"],
                json_value(), 0..8)) {
                let mut record = record;
                if let Value::Object(map) = &mut record {
                    map.extend(fields);
                }
                for source in SourceType::ALL {
                    for data_type in DataType::ALL {
                        let set = compile(*source, *data_type, &[]).unwrap();
                        let _ = set.apply(&record);
                    }
                }
            }

            /// Every op, on any value, yields a value or a per-record error.
            #[test]
            fn ops_never_panic(value in json_value(), index in -3i64..3, max in 0usize..5) {
                let ops = json!([
                    {"op": "to_number"}, {"op": "to_int"}, {"op": "to_bool"}, {"op": "to_string"},
                    {"op": "date"}, {"op": "lowercase"}, {"op": "uppercase"}, {"op": "trim"},
                    {"op": "split", "separator": "-", "index": index}, {"op": "email_domain"},
                    {"op": "regex_extract", "pattern": "(\\d+)"}, {"op": "regex_replace", "pattern": "\\s", "replacement": "_"},
                    {"op": "hash"}, {"op": "max_len", "max": max}, {"op": "is_email"},
                    {"op": "enum_map", "map": {"a": 1}, "on_unmapped": "null"},
                    {"op": "concat", "paths": ["v", "w"]}, {"op": "coalesce", "paths": ["w"]}
                ]);
                for op in ops.as_array().unwrap() {
                    for target in ["properties.x", "source_created_at", "email", "first_name"] {
                        let _ = map(target, json!({"source": "v", "ops": [op]}), json!({"id": 1, "v": value.clone(), "w": value.clone()}));
                    }
                }
            }
        }
    }
}
