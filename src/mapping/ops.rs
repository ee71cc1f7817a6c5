//! The transform ops of a field mapping and what each does to a value.
//!
//! A value is `Missing` (no such key), `Null`, or a JSON value; `""` is a value. Ops that have no
//! meaning for an absent value pass it through, so `required` or `default` later decide.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use super::path::{Found, Path};

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Missing,
    Null,
    Value(Value),
}

impl Val {
    pub fn from_found(found: Found<'_>) -> Self {
        match found {
            Found::Missing => Val::Missing,
            Found::Null => Val::Null,
            Found::Value(v) => Val::Value(v.clone()),
        }
    }

    /// Missing, null or an empty / blank string.
    pub fn is_empty(&self) -> bool {
        match self {
            Val::Missing | Val::Null => true,
            Val::Value(Value::String(s)) => s.trim().is_empty(),
            Val::Value(_) => false,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Val::Value(Value::String(s)) => Some(s.clone()),
            Val::Value(Value::Number(n)) => Some(n.to_string()),
            Val::Value(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnmapped {
    #[default]
    Passthrough,
    Default,
    Null,
    Error,
}

/// An op as stored (JSON, `{"op": "…", …}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpSpec {
    Const {
        value: Value,
    },
    Default {
        value: Value,
        /// Also replace `""` (not only missing and null).
        #[serde(default)]
        when_empty: bool,
    },
    Coalesce {
        paths: Vec<String>,
    },
    ToNumber,
    ToInt,
    ToBool,
    ToString,
    EnumMap {
        map: BTreeMap<String, Value>,
        #[serde(default)]
        on_unmapped: OnUnmapped,
        #[serde(default)]
        default: Option<Value>,
        #[serde(default)]
        case_insensitive: bool,
    },
    Date {
        #[serde(default)]
        formats: Vec<String>,
    },
    Lowercase,
    Uppercase,
    Trim,
    Concat {
        paths: Vec<String>,
        #[serde(default = "space")]
        separator: String,
    },
    Split {
        separator: String,
        index: i64,
    },
    EmailDomain,
    RegexExtract {
        pattern: String,
        #[serde(default = "one")]
        group: usize,
    },
    RegexReplace {
        pattern: String,
        replacement: String,
    },
    Hash,
    Required,
    IsEmail,
    MaxLen {
        max: usize,
    },
    OneOf {
        values: Vec<Value>,
    },
    /// Skips the whole record (counted as skipped, not failed) when the value equals `equals`,
    /// differs from `not_equals`, or (`missing: true`) is missing or null.
    SkipIf {
        #[serde(default)]
        equals: Option<Value>,
        #[serde(default)]
        not_equals: Option<Value>,
        #[serde(default)]
        missing: bool,
    },
}

fn space() -> String {
    " ".into()
}

fn one() -> usize {
    1
}

/// The date formats tried when a `date` op names none, in order.
pub const DEFAULT_DATE_FORMATS: &[&str] = &[
    "rfc3339",
    "offset_no_colon",
    "naive",
    "date",
    "epoch_s",
    "epoch_ms",
];

#[derive(Debug, Clone)]
pub enum DateFormat {
    Rfc3339,
    OffsetNoColon,
    Naive,
    Date,
    EpochS,
    EpochMs,
    Pattern(String),
}

/// A validated op, ready to apply.
#[derive(Debug, Clone)]
pub enum Op {
    Const(Value),
    Default(Value, bool),
    Coalesce(Vec<Path>),
    ToNumber,
    ToInt,
    ToBool,
    ToString,
    EnumMap {
        map: BTreeMap<String, Value>,
        on_unmapped: OnUnmapped,
        default: Option<Value>,
        case_insensitive: bool,
    },
    Date(Vec<DateFormat>),
    Lowercase,
    Uppercase,
    Trim,
    Concat(Vec<Path>, String),
    Split(String, i64),
    EmailDomain,
    RegexExtract(Regex, usize),
    RegexReplace(Regex, String),
    Hash,
    Required,
    IsEmail,
    MaxLen(usize),
    OneOf(Vec<Value>),
    SkipIf {
        equals: Option<Value>,
        not_equals: Option<Value>,
        missing: bool,
    },
}

pub fn date_format(name: &str) -> Result<DateFormat, String> {
    Ok(match name {
        "rfc3339" => DateFormat::Rfc3339,
        "offset_no_colon" => DateFormat::OffsetNoColon,
        "naive" => DateFormat::Naive,
        "date" => DateFormat::Date,
        "epoch_s" => DateFormat::EpochS,
        "epoch_ms" => DateFormat::EpochMs,
        p if p.contains('%') => {
            // chrono reports a bad pattern only when formatting; format a fixed date to check it.
            let probe = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
            let mut out = String::new();
            use std::fmt::Write;
            if write!(out, "{}", probe.format(p)).is_err() {
                return Err(format!("date format `{p}` is not a valid strftime pattern"));
            }
            DateFormat::Pattern(p.to_string())
        }
        other => {
            return Err(format!(
                "unknown date format `{other}`; use one of {} or a strftime pattern (with %)",
                DEFAULT_DATE_FORMATS.join(", ")
            ));
        }
    })
}

impl OpSpec {
    pub fn compile(&self) -> Result<Op, String> {
        let paths = |ps: &[String]| ps.iter().map(|p| Path::parse(p)).collect::<Result<_, _>>();
        let regex = |p: &str| Regex::new(p).map_err(|e| format!("bad regex `{p}`: {e}"));
        Ok(match self {
            OpSpec::Const { value } => Op::Const(value.clone()),
            OpSpec::Default { value, when_empty } => Op::Default(value.clone(), *when_empty),
            OpSpec::Coalesce { paths: ps } => Op::Coalesce(paths(ps)?),
            OpSpec::ToNumber => Op::ToNumber,
            OpSpec::ToInt => Op::ToInt,
            OpSpec::ToBool => Op::ToBool,
            OpSpec::ToString => Op::ToString,
            OpSpec::EnumMap {
                map,
                on_unmapped,
                default,
                case_insensitive,
            } => {
                if *on_unmapped == OnUnmapped::Default && default.is_none() {
                    return Err("enum_map with on_unmapped = default needs a `default`".into());
                }
                let map = if *case_insensitive {
                    map.iter()
                        .map(|(k, v)| (k.to_lowercase(), v.clone()))
                        .collect()
                } else {
                    map.clone()
                };
                Op::EnumMap {
                    map,
                    on_unmapped: *on_unmapped,
                    default: default.clone(),
                    case_insensitive: *case_insensitive,
                }
            }
            OpSpec::Date { formats } => {
                let names: Vec<&str> = if formats.is_empty() {
                    DEFAULT_DATE_FORMATS.to_vec()
                } else {
                    formats.iter().map(String::as_str).collect()
                };
                Op::Date(
                    names
                        .into_iter()
                        .map(date_format)
                        .collect::<Result<_, _>>()?,
                )
            }
            OpSpec::Lowercase => Op::Lowercase,
            OpSpec::Uppercase => Op::Uppercase,
            OpSpec::Trim => Op::Trim,
            OpSpec::Concat {
                paths: ps,
                separator,
            } => Op::Concat(paths(ps)?, separator.clone()),
            OpSpec::Split { separator, index } => {
                if separator.is_empty() {
                    return Err("split needs a non-empty separator".into());
                }
                Op::Split(separator.clone(), *index)
            }
            OpSpec::EmailDomain => Op::EmailDomain,
            OpSpec::RegexExtract { pattern, group } => {
                let re = regex(pattern)?;
                if *group >= re.captures_len() {
                    return Err(format!(
                        "regex `{pattern}` has no group {group} (it has {})",
                        re.captures_len() - 1
                    ));
                }
                Op::RegexExtract(re, *group)
            }
            OpSpec::RegexReplace {
                pattern,
                replacement,
            } => Op::RegexReplace(regex(pattern)?, replacement.clone()),
            OpSpec::Hash => Op::Hash,
            OpSpec::Required => Op::Required,
            OpSpec::IsEmail => Op::IsEmail,
            OpSpec::MaxLen { max } => Op::MaxLen(*max),
            OpSpec::OneOf { values } => Op::OneOf(values.clone()),
            OpSpec::SkipIf {
                equals,
                not_equals,
                missing,
            } => Op::SkipIf {
                equals: equals.clone(),
                not_equals: not_equals.clone(),
                missing: *missing,
            },
        })
    }
}

/// Why an op refused a value: a per-record, per-field error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> OpError {
    OpError {
        code,
        message: message.into(),
    }
}

/// What applying an op yields.
pub enum Step {
    Continue(Val),
    SkipRecord,
}

pub fn parse_number(text: &str) -> Option<Number> {
    let t = text.trim().replace(',', "");
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Number::from(i));
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(Number::from_f64)
}

pub fn parse_date(text: &str, formats: &[DateFormat]) -> Option<DateTime<Utc>> {
    let t = text.trim();
    for format in formats {
        let parsed = match format {
            DateFormat::Rfc3339 => DateTime::parse_from_rfc3339(t).ok().map(|d| d.to_utc()),
            DateFormat::OffsetNoColon => DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z")
                .ok()
                .map(|d| d.to_utc()),
            DateFormat::Naive => NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()
                .map(|d| d.and_utc()),
            DateFormat::Date => NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc()),
            DateFormat::EpochS => t
                .parse::<i64>()
                .ok()
                .filter(|s| s.abs() < 100_000_000_000)
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            DateFormat::EpochMs => t
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis),
            DateFormat::Pattern(p) => DateTime::parse_from_str(t, p)
                .map(|d| d.to_utc())
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(t, p)
                        .ok()
                        .map(|d| d.and_utc())
                })
                .or_else(|| {
                    NaiveDate::parse_from_str(t, p)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc())
                }),
        };
        if parsed.is_some() {
            return parsed;
        }
    }
    None
}

pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

impl Op {
    pub fn apply(&self, value: Val, record: &Value) -> Result<Step, OpError> {
        use Step::Continue;
        let text_map = |value: Val, f: &dyn Fn(&str) -> String| match value {
            Val::Value(Value::String(s)) => Val::Value(Value::String(f(&s))),
            other => other,
        };
        Ok(match self {
            Op::Const(v) => Continue(Val::Value(v.clone())),
            Op::Default(v, when_empty) => {
                let replace = match &value {
                    Val::Missing | Val::Null => true,
                    Val::Value(Value::String(s)) => *when_empty && s.trim().is_empty(),
                    _ => false,
                };
                Continue(if replace {
                    Val::Value(v.clone())
                } else {
                    value
                })
            }
            Op::Coalesce(paths) => {
                if !value.is_empty() {
                    return Ok(Continue(value));
                }
                let found = paths
                    .iter()
                    .map(|p| Val::from_found(p.get(record)))
                    .find(|v| !v.is_empty());
                Continue(found.unwrap_or(value))
            }
            Op::ToNumber | Op::ToInt => {
                let number = match &value {
                    Val::Value(Value::Number(n)) => Some(n.clone()),
                    Val::Value(Value::String(s)) if s.trim().is_empty() => {
                        return Ok(Continue(Val::Null));
                    }
                    Val::Value(Value::String(s)) => Some(
                        parse_number(s)
                            .ok_or_else(|| err("not_a_number", format!("{s:?} is not a number")))?,
                    ),
                    Val::Value(Value::Bool(b)) => Some(Number::from(i64::from(*b))),
                    Val::Value(other) => {
                        return Err(err("not_a_number", format!("{other} is not a number")));
                    }
                    _ => None,
                };
                match number {
                    None => Continue(value),
                    Some(n) if matches!(self, Op::ToInt) => {
                        let f = n.as_f64().unwrap_or_default();
                        if n.is_i64() || n.is_u64() {
                            Continue(Val::Value(Value::Number(n)))
                        } else if f.fract() == 0.0 && f.abs() < 9.0e15 {
                            Continue(Val::Value(Value::Number(Number::from(f as i64))))
                        } else {
                            return Err(err("not_an_integer", format!("{n} is not an integer")));
                        }
                    }
                    Some(n) => Continue(Val::Value(Value::Number(n))),
                }
            }
            Op::ToBool => match &value {
                Val::Value(Value::Bool(_)) | Val::Missing | Val::Null => Continue(value),
                Val::Value(v) => {
                    let text = match v {
                        Value::String(s) => s.trim().to_lowercase(),
                        other => other.to_string(),
                    };
                    match text.as_str() {
                        "true" | "1" | "yes" | "y" | "on" => {
                            Continue(Val::Value(Value::Bool(true)))
                        }
                        "false" | "0" | "no" | "n" | "off" => {
                            Continue(Val::Value(Value::Bool(false)))
                        }
                        "" => Continue(Val::Null),
                        _ => return Err(err("not_a_bool", format!("{v} is not a boolean"))),
                    }
                }
            },
            Op::ToString => match &value {
                Val::Value(Value::String(_)) | Val::Missing | Val::Null => Continue(value),
                Val::Value(v) => Continue(Val::Value(Value::String(match v {
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => other.to_string(),
                }))),
            },
            Op::EnumMap {
                map,
                on_unmapped,
                default,
                case_insensitive,
            } => {
                let Some(key) = value.text() else {
                    return Ok(Continue(value));
                };
                let key = if *case_insensitive {
                    key.to_lowercase()
                } else {
                    key
                };
                match map.get(&key) {
                    Some(mapped) => Continue(Val::Value(mapped.clone())),
                    None => match on_unmapped {
                        OnUnmapped::Passthrough => Continue(value),
                        OnUnmapped::Null => Continue(Val::Null),
                        OnUnmapped::Default => {
                            Continue(Val::Value(default.clone().unwrap_or(Value::Null)))
                        }
                        OnUnmapped::Error => {
                            return Err(err("unmapped_value", format!("{key:?} has no mapping")));
                        }
                    },
                }
            }
            Op::Date(formats) => {
                let Some(text) = value.text() else {
                    return Ok(Continue(value));
                };
                if text.trim().is_empty() {
                    return Ok(Continue(Val::Null));
                }
                let parsed = parse_date(&text, formats).ok_or_else(|| {
                    err(
                        "invalid_date",
                        format!("{text:?} matches none of the date formats"),
                    )
                })?;
                Continue(Val::Value(Value::String(
                    parsed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )))
            }
            Op::Lowercase => Continue(text_map(value, &|s| s.to_lowercase())),
            Op::Uppercase => Continue(text_map(value, &|s| s.to_uppercase())),
            Op::Trim => Continue(text_map(value, &|s| s.trim().to_string())),
            Op::Concat(paths, separator) => {
                let mut parts = Vec::new();
                if let Some(t) = value.text().filter(|t| !t.trim().is_empty()) {
                    parts.push(t);
                }
                for p in paths {
                    if let Some(t) = Val::from_found(p.get(record))
                        .text()
                        .filter(|t| !t.trim().is_empty())
                    {
                        parts.push(t);
                    }
                }
                if parts.is_empty() {
                    Continue(if matches!(value, Val::Missing) {
                        Val::Missing
                    } else {
                        Val::Null
                    })
                } else {
                    Continue(Val::Value(Value::String(parts.join(separator))))
                }
            }
            Op::Split(separator, index) => {
                let Some(text) = value.text() else {
                    return Ok(Continue(value));
                };
                let parts: Vec<&str> = text.split(separator.as_str()).collect();
                let i = if *index < 0 {
                    parts.len() as i64 + index
                } else {
                    *index
                };
                Continue(
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| parts.get(i))
                        .map(|p| Val::Value(Value::String(p.to_string())))
                        .unwrap_or(Val::Null),
                )
            }
            Op::EmailDomain => {
                let Some(text) = value.text() else {
                    return Ok(Continue(value));
                };
                Continue(
                    crate::matching::email_domain(&text)
                        .map(|d| Val::Value(Value::String(d)))
                        .unwrap_or(Val::Null),
                )
            }
            Op::RegexExtract(re, group) => {
                let Some(text) = value.text() else {
                    return Ok(Continue(value));
                };
                Continue(
                    re.captures(&text)
                        .and_then(|c| c.get(*group))
                        .map(|m| Val::Value(Value::String(m.as_str().to_string())))
                        .unwrap_or(Val::Null),
                )
            }
            Op::RegexReplace(re, replacement) => {
                let Some(text) = value.text() else {
                    return Ok(Continue(value));
                };
                Continue(Val::Value(Value::String(
                    re.replace_all(&text, replacement.as_str()).into_owned(),
                )))
            }
            Op::Hash => match &value {
                Val::Value(v) => {
                    let text = value.text().unwrap_or_else(|| v.to_string());
                    Continue(Val::Value(Value::String(hex::encode(Sha256::digest(
                        text.as_bytes(),
                    )))))
                }
                _ => Continue(value),
            },
            Op::Required => {
                if value.is_empty() {
                    return Err(err("required", "a value is required"));
                }
                Continue(value)
            }
            Op::IsEmail => {
                if let Some(text) = value.text()
                    && !text.trim().is_empty()
                    && !looks_like_email(&text)
                {
                    return Err(err(
                        "invalid_email",
                        format!("{text:?} is not an email address"),
                    ));
                }
                Continue(value)
            }
            Op::MaxLen(max) => {
                if let Some(text) = value.text()
                    && text.chars().count() > *max
                {
                    return Err(err(
                        "too_long",
                        format!("{} characters; at most {max}", text.chars().count()),
                    ));
                }
                Continue(value)
            }
            Op::OneOf(values) => {
                if let Val::Value(v) = &value
                    && !values.contains(v)
                {
                    return Err(err(
                        "not_allowed",
                        format!("{v} is not one of the allowed values"),
                    ));
                }
                Continue(value)
            }
            Op::SkipIf {
                equals,
                not_equals,
                missing,
            } => {
                let v = match &value {
                    Val::Value(v) => Some(v),
                    _ => None,
                };
                let skip = (*missing && v.is_none())
                    || equals.as_ref().is_some_and(|e| v == Some(e))
                    || not_equals.as_ref().is_some_and(|e| v != Some(e));
                if skip {
                    Step::SkipRecord
                } else {
                    Continue(value)
                }
            }
        })
    }
}
