//! The webhook body: parsing its envelope without parsing its records, and cutting the records
//! into compressed chunks, byte for byte as received.
//!
//! Records stay `RawValue`s: serde checks that they are JSON (and objects) but builds nothing, so a
//! 16 MiB batch costs one pass over its bytes. Semantic checks against the integration (does the
//! source type match, is the data type enabled) belong to the caller, which knows the integration.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The envelope n8n posts, as the seed defined it plus `final` and `sync_mode`. Unknown fields are
/// ignored so a workflow may carry its own bookkeeping.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = WebhookBatch)]
pub struct Envelope<'a> {
    pub integration_id: Uuid,
    /// The sync this batch belongs to (from the trigger); absent: a new sync is opened.
    #[serde(default)]
    pub sync_log_id: Option<Uuid>,
    /// `contacts`, `tickets` or `deals`.
    pub data_type: String,
    /// The integration's source type (checked against it).
    pub source_type: String,
    /// The source's records as it sent them (at most `ingest.max_records`).
    #[serde(borrow)]
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<&'a RawValue>,
    /// The integration's API key, for workflows that cannot set a header (prefer the header).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The data type's last batch of the sync.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// `incremental` or `full` (a full sync soft-deletes what it did not see).
    #[serde(default)]
    pub sync_mode: Option<String>,
    /// Set by a workflow whose fetching failed: the batch is its data type's last, and the sync
    /// fails with reason `source_error` (the records it carries are still stored).
    #[serde(default)]
    pub error: Option<SourceError>,
    /// On a final batch: the number of batches (this one included) of its data type in the
    /// sync, so a final batch that overtakes others does not complete the type early.
    #[serde(default)]
    pub batch_count: Option<u32>,
}

/// What a workflow reports when the source refused or failed a request: its message and, when
/// it answered at all, its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct SourceError {
    /// Required; missing is reported like empty, with its path.
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Option<u16>,
}

/// The longest source error message kept; longer ones are cut (a vendor's HTML error page says
/// nothing more in its second kilobyte).
pub const MAX_SOURCE_ERROR_CHARS: usize = 2000;

impl SourceError {
    /// The message as the sync log keeps it, with the status.
    pub fn summary(&self, data_type: &str) -> String {
        let mut message: String = self
            .message
            .trim()
            .chars()
            .take(MAX_SOURCE_ERROR_CHARS)
            .collect();
        if self.message.trim().chars().count() > MAX_SOURCE_ERROR_CHARS {
            message.push('…');
        }
        match self.status {
            Some(status) => {
                format!("fetching {data_type} failed: the source answered {status}: {message}")
            }
            None => format!("fetching {data_type} failed: {message}"),
        }
    }
}

/// Why a body is not a valid envelope, with where: answered as 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// JSON path of the offending value (`records[3]`), empty for the document itself.
    pub path: String,
    pub message: String,
}

/// Who a body says it is from: the integration it names and the key it may carry. Read before
/// the caller is known (a key in the body, or the global key naming its integration), so it skips
/// everything else without building it; [`parse`] reads the rest once the caller is trusted.
#[derive(Debug, Deserialize)]
pub struct Addressed {
    pub integration_id: Uuid,
    #[serde(default)]
    pub api_key: Option<String>,
}

pub fn peek(body: &[u8]) -> Result<Addressed, ShapeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        ShapeError {
            message: format!(
                "the body is not a valid webhook envelope: {}",
                e.into_inner()
            ),
            path: if path == "." { String::new() } else { path },
        }
    })
}

pub fn parse(body: &[u8]) -> Result<Envelope<'_>, ShapeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let envelope: Envelope<'_> =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let path = if path == "." { String::new() } else { path };
            ShapeError {
                message: if path.is_empty() {
                    format!("the body is not a valid webhook envelope: {inner}")
                } else {
                    format!("`{path}`: {inner}")
                },
                path,
            }
        })?;
    deserializer.end().map_err(|e| ShapeError {
        path: String::new(),
        message: format!("trailing data after the JSON document: {e}"),
    })?;
    if envelope.batch_count == Some(0) {
        return Err(ShapeError {
            path: "batch_count".into(),
            message:
                "`batch_count` counts the batches of the data type, this one included: at least 1"
                    .into(),
        });
    }
    if let Some(error) = &envelope.error {
        if error.message.trim().is_empty() {
            return Err(ShapeError {
                path: "error.message".into(),
                message: "`error.message` must say what the source answered".into(),
            });
        }
        if let Some(status) = error.status
            && !(100..=599).contains(&status)
        {
            return Err(ShapeError {
                path: "error.status".into(),
                message: format!("`error.status` {status} is not an HTTP status (100 to 599)"),
            });
        }
    }
    if let Some(index) = envelope
        .records
        .iter()
        .position(|r| !r.get().starts_with('{'))
    {
        return Err(ShapeError {
            path: format!("records[{index}]"),
            message: format!("`records[{index}]` must be a JSON object (one record)"),
        });
    }
    Ok(envelope)
}

/// Checks that every record is JSON the worker can parse: string escapes that decode (no lone
/// UTF-16 surrogate such as `"\ud800"`), numbers within f64 (no `1e400`), and nesting within
/// [`MAX_RECORD_DEPTH`]. Skipping a value while parsing the envelope checks none of these, and a
/// record failing them could never be stored; refusing the delivery tells n8n at once.
pub fn check_records(records: &[&RawValue]) -> Result<(), ShapeError> {
    for (index, record) in records.iter().enumerate() {
        if plainly_parsable(record.get().as_bytes()) {
            continue;
        }
        let mut deserializer = serde_json::Deserializer::from_str(record.get());
        if let Err(e) = serde_path_to_error::deserialize::<_, Checked>(&mut deserializer) {
            let inner = e.path().to_string();
            let path = if inner == "." {
                format!("records[{index}]")
            } else {
                format!("records[{index}].{inner}")
            };
            let message = e.into_inner().to_string();
            let message = if message.starts_with("recursion limit exceeded") {
                format!("records are nested at most {MAX_RECORD_DEPTH} levels deep")
            } else if message.contains("surrogate") || message.contains("hex escape") {
                format!(
                    "a \\u escape is a lone UTF-16 surrogate, which is not a character ({message})"
                )
            } else {
                message
            };
            return Err(ShapeError {
                message: format!("`{path}`: {message}"),
                path,
            });
        }
    }
    Ok(())
}

/// The fast path of [`check_records`]: one pass over a record that the envelope's parse already
/// found to be JSON, looking only for the three things that parse did not check. True when none
/// can be there; false sends the record through serde_json, which finds the fault and its path.
///
/// Written by hand because visiting every value with serde_json (escapes decoded, numbers
/// converted) cost 1–4 % of the pipeline benchmark's throughput on the shared two cores, while
/// almost every record holds none of these. Measured on the benchmark's 1.14 KB contact: 320 ns
/// a record (SHA-256 of the same bytes: 580 ns); one `memchr2_iter` over the whole record took
/// 590 ns (a restart per quote costs more than a search per string), a plain byte loop in
/// strings 510 ns.
fn plainly_parsable(text: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(at) = memchr::memchr2(b'"', b'\\', &text[i..]) else {
                        return false;
                    };
                    i += at;
                    if text[i] == b'"' {
                        i += 1;
                        break;
                    }
                    // An escape: only `\u` can be wrong here (a lone surrogate).
                    if text.get(i + 1) != Some(&b'u') {
                        i += 2;
                        continue;
                    }
                    match hex4(text, i + 2) {
                        Some(0xD800..=0xDBFF)
                            if text.get(i + 6..i + 8) == Some(b"\\u")
                                && matches!(hex4(text, i + 8), Some(0xDC00..=0xDFFF)) =>
                        {
                            i += 12
                        }
                        Some(0xD800..=0xDFFF) | None => return false,
                        Some(_) => i += 6,
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_RECORD_DEPTH {
                    return false;
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let number = &text[start..i];
                // Short numbers without an exponent always fit; the others are parsed (an
                // overflow parses as infinity).
                if (number.len() > 15 || number.iter().any(|b| b | 0x20 == b'e'))
                    && !std::str::from_utf8(number)
                        .ok()
                        .and_then(|n| n.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// serde_json's recursion limit: the depth of arrays and objects a record may have, counting its
/// own object. The worker parses records with the same limit.
pub const MAX_RECORD_DEPTH: usize = 127;

/// Any JSON value, visited in full (escapes decoded, numbers converted) but kept nowhere.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Checked, E> {
        if v.is_finite() {
            Ok(Checked)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// Identifies a delivery's content: the same records (same bytes, same order), data type and
/// final flag hash the same, so a repeated delivery is recognised.
pub fn content_hash(envelope: &Envelope<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(envelope.data_type.as_bytes());
    hasher.update([0, u8::from(envelope.is_final), 0]);
    hasher.update(envelope.batch_count.unwrap_or(0).to_le_bytes());
    if let Some(error) = &envelope.error {
        hasher.update(error.message.as_bytes());
        hasher.update(error.status.unwrap_or(0).to_le_bytes());
    }
    hasher.update([0]);
    for record in &envelope.records {
        hasher.update(record.get().as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c1b9e-8a36-4b44-9d0a-2d2f6c1f4a10";

    fn body(records: &str) -> String {
        format!(
            r#"{{"integration_id":"{ID}","data_type":"contacts","source_type":"hubspot","records":{records}}}"#
        )
    }

    #[test]
    fn records_stay_as_received() {
        let text = body(r#"[{"a": 1,  "b":"x"}, {"c":[1,2]}]"#);
        let envelope = parse(text.as_bytes()).unwrap();
        assert_eq!(envelope.records.len(), 2);
        assert_eq!(envelope.records[0].get(), r#"{"a": 1,  "b":"x"}"#);
        assert!(!envelope.is_final);
    }

    #[test]
    fn shape_errors_say_where() {
        let text = body(r#"[{"a":1}, 7]"#);
        let e = parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.path, "records[1]");

        let text = body(r#"{"a":1}"#);
        let e = parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.path, "records");

        let text =
            r#"{"integration_id":"nope","data_type":"contacts","source_type":"x","records":[]}"#;
        let e = parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.path, "integration_id");

        let e = parse(br#"{"integration_id": "#).unwrap_err();
        assert!(e.message.contains("EOF"), "{}", e.message);

        let e = parse(format!("{} x", body("[]")).as_bytes()).unwrap_err();
        assert!(e.message.contains("trailing"), "{}", e.message);
    }

    #[test]
    fn the_fast_scan_passes_exactly_what_serde_json_parses() {
        let cases = [
            (r#"{"a":"x\u0000y","b":"\ud83d\ude00","c":"\\ud800"}"#, true),
            (r#"{"a":"\ud800"}"#, false),
            (r#"{"a":"\ud800\u0041"}"#, false),
            (r#"{"a":"\udc00"}"#, false),
            (
                r#"{"a":1e308,"b":-1.5E-400,"c":123456789012345678901234567890}"#,
                true,
            ),
            (r#"{"a":1e309}"#, false),
            (r#"{"a":-1e400}"#, false),
            (r#"{"s":"1e400 inside a string"}"#, true),
        ];
        for (text, fine) in cases {
            let parsed = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(parsed, fine, "serde_json on {text}");
            assert_eq!(
                plainly_parsable(text.as_bytes()),
                fine,
                "fast scan on {text}"
            );
        }
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        for levels in [127, 128] {
            let text = nested(levels);
            assert_eq!(
                plainly_parsable(text.as_bytes()),
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "{levels} levels"
            );
        }
    }

    #[test]
    fn records_the_worker_could_not_parse_are_refused_with_their_path() {
        let cases = [
            (
                r#"[{"id":1},{"id":2,"p":{"name":"\ud800"}}]"#,
                "records[1].p.name",
            ),
            (r#"[{"id":1,"amount":1e400}]"#, "records[0].amount"),
            (r#"[{"id":1,"list":[1,2,-1e999]}]"#, "records[0].list[2]"),
        ];
        for (records, path) in cases {
            let text = body(records);
            let envelope = parse(text.as_bytes()).expect("the envelope itself parses");
            let e = check_records(&envelope.records).unwrap_err();
            assert_eq!(e.path, path, "{records}: {}", e.message);
        }
        let deep = format!(
            "[{{\"id\":1,\"x\":{}1{}}}]",
            "[".repeat(127),
            "]".repeat(127)
        );
        let text = body(&deep);
        let envelope = parse(text.as_bytes()).unwrap();
        let e = check_records(&envelope.records).unwrap_err();
        assert!(e.path.starts_with("records[0].x[0]"), "{}", e.path);
        assert!(e.message.contains("127 levels"), "{}", e.message);

        let fine = format!(
            "[{{\"id\":1,\"x\":{}1{},\"s\":\"\\ud83d\\ude00 \\u0000\",\"n\":1e308}}]",
            "[".repeat(126),
            "]".repeat(126)
        );
        let text = body(&fine);
        let envelope = parse(text.as_bytes()).unwrap();
        check_records(&envelope.records)
            .expect("a surrogate pair, NUL, 1e308 and depth 127 are JSON");
    }

    #[test]
    fn a_source_error_needs_a_message_and_a_real_status() {
        let with = |error: &str| {
            body("[]").replace("\"records\"", &format!("\"error\":{error},\"records\""))
        };
        let ok = with(r#"{"message":"You have reached your secondly limit.","status":429}"#);
        let envelope = parse(ok.as_bytes()).unwrap();
        let error = envelope.error.as_ref().unwrap();
        assert_eq!(
            error.summary("deals"),
            "fetching deals failed: the source answered 429: You have reached your secondly limit."
        );
        assert_ne!(
            content_hash(&envelope),
            content_hash(&parse(body("[]").as_bytes()).unwrap())
        );
        let no_status = with(r#"{"message":"ECONNRESET"}"#);
        assert_eq!(
            parse(no_status.as_bytes())
                .unwrap()
                .error
                .unwrap()
                .summary("tickets"),
            "fetching tickets failed: ECONNRESET"
        );
        assert_eq!(
            parse(with(r#"{"message":" "}"#).as_bytes())
                .unwrap_err()
                .path,
            "error.message"
        );
        assert_eq!(
            parse(with(r#"{"message":"x","status":42}"#).as_bytes())
                .unwrap_err()
                .path,
            "error.status"
        );
        let long = SourceError {
            message: "x".repeat(5000),
            status: None,
        };
        assert_eq!(
            long.summary("deals").chars().count(),
            "fetching deals failed: ".len() + MAX_SOURCE_ERROR_CHARS + 1
        );
    }

    #[test]
    fn content_hash_follows_bytes_and_final_flag() {
        let a = body(r#"[{"a":1}]"#);
        let b = body(r#"[{"a":2}]"#);
        let ea = parse(a.as_bytes()).unwrap();
        let eb = parse(b.as_bytes()).unwrap();
        assert_eq!(
            content_hash(&ea),
            content_hash(&parse(a.as_bytes()).unwrap())
        );
        assert_ne!(content_hash(&ea), content_hash(&eb));
        let final_a = a.replace("\"records\"", "\"final\":true,\"records\"");
        assert_ne!(
            content_hash(&ea),
            content_hash(&parse(final_a.as_bytes()).unwrap())
        );
    }
}
