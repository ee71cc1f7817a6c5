//! Source paths into a JSON record: `a.b`, `a[0]`, `custom_fields[id=123].value`.
//!
//! A lookup tells a missing key from a JSON `null`: the mapping ops treat them differently.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    /// The first array element whose `key` equals `value` (compared as text).
    Select {
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    text: String,
    steps: Vec<Step>,
}

/// What a path found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'a> {
    Missing,
    Null,
    Value(&'a Value),
}

impl Path {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        if text.trim().is_empty() {
            return Err("a path must not be empty".into());
        }
        for segment in text.split('.') {
            let (name, mut rest) = match segment.find('[') {
                Some(i) => (&segment[..i], &segment[i..]),
                None => (segment, ""),
            };
            if name.is_empty() && rest.is_empty() {
                return Err(format!("path `{text}` has an empty segment"));
            }
            if !name.is_empty() {
                steps.push(Step::Key(name.to_string()));
            }
            while !rest.is_empty() {
                let Some(close) = rest.find(']') else {
                    return Err(format!("path `{text}`: `[` without `]`"));
                };
                if !rest.starts_with('[') {
                    return Err(format!("path `{text}`: unexpected `{rest}`"));
                }
                let inner = &rest[1..close];
                let step = match inner.split_once('=') {
                    Some((key, value)) if !key.is_empty() => Step::Select {
                        key: key.to_string(),
                        value: value.trim_matches(|c| c == '"' || c == '\'').to_string(),
                    },
                    Some(_) => return Err(format!("path `{text}`: `[=…]` needs a key")),
                    None => Step::Index(inner.parse().map_err(|_| {
                        format!("path `{text}`: `[{inner}]` is neither an index nor key=value")
                    })?),
                };
                steps.push(step);
                rest = &rest[close + 1..];
            }
        }
        Ok(Self {
            text: text.to_string(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn get<'a>(&self, record: &'a Value) -> Found<'a> {
        let mut current = record;
        for step in &self.steps {
            let next = match (step, current) {
                (Step::Key(k), Value::Object(map)) => map.get(k),
                (Step::Index(i), Value::Array(items)) => {
                    let i = if *i < 0 { items.len() as i64 + i } else { *i };
                    usize::try_from(i).ok().and_then(|i| items.get(i))
                }
                (Step::Select { key, value }, Value::Array(items)) => items.iter().find(|item| {
                    item.get(key).is_some_and(|v| match v {
                        Value::String(s) => s == value,
                        other => other.to_string().as_str() == value.as_str(),
                    })
                }),
                _ => None,
            };
            match next {
                Some(v) => current = v,
                None => return Found::Missing,
            }
        }
        if current.is_null() {
            Found::Null
        } else {
            Found::Value(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_keys_indexes_and_selected_elements() {
        let r = json!({
            "a": {"b": 1, "n": null},
            "tags": [{"name": "x"}, {"name": "y"}],
            "custom_fields": [{"id": 7, "value": "seven"}, {"id": "x", "value": "ex"}]
        });
        let get = |p: &str| Path::parse(p).unwrap().get(&r).clone();
        assert_eq!(get("a.b"), Found::Value(&json!(1)));
        assert_eq!(get("a.n"), Found::Null);
        assert_eq!(get("a.zzz"), Found::Missing);
        assert_eq!(get("tags[1].name"), Found::Value(&json!("y")));
        assert_eq!(get("tags[-1].name"), Found::Value(&json!("y")));
        assert_eq!(get("tags[5].name"), Found::Missing);
        assert_eq!(
            get("custom_fields[id=7].value"),
            Found::Value(&json!("seven"))
        );
        assert_eq!(get("custom_fields[id=x].value"), Found::Value(&json!("ex")));
        assert_eq!(get("a.b.c"), Found::Missing);
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["", "a..b", "a[", "a[x]", "a[=1]", "a]b["] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
