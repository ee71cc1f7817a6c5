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
    Numeric,
    Date,
    Bool,
}

impl ColumnType {
    /// The SQL type a column's canonical text is cast to.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Timestamp => "timestamptz",
            ColumnType::Numeric => "numeric",
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
            ("amount", Numeric),
            ("currency", Text),
            ("stage", Text),
            ("pipeline", Text),
            ("probability", Numeric),
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

    pub fn column_index(&self, name: &str) -> Option<usize> {
        columns(self.data_type).iter().position(|(c, _)| *c == name)
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
        Numeric => match v {
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

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}
