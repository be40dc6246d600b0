//! Decoding untrusted wire input the way Kuma does, field by field.
//!
//! Kuma decodes old-style (protobuf) types with `jsonpb`, unknown fields allowed: an unknown
//! key is dropped, `null` means "absent" (and `""` as a map value), 32-bit integers may be
//! quoted, durations use Go's syntax. [`decode_spec`] does the same with serde, and goes
//! further where that helps the user:
//!
//! - every unknown field is named in a warning (Kuma drops them silently);
//! - every field that does not decode is reported with its path, not only the first one
//!   (Kuma stops at the first and names no field).
//!
//! The `deserialize_with` helpers ([`uint32`], [`opt_uint32`], [`opt_duration`]) give typed
//! spec structs Kuma's leniencies.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{ValidationError, Violations};

/// Fields that hold string maps (`tags`, `labels`): a `null` value inside them reads as `""`.
const MAP_FIELDS: [&str; 2] = ["tags", "labels"];

/// At most this many decode errors are collected from one document.
const MAX_ERRORS: usize = 64;

/// Rewrites `null`s as jsonpb reads them: a `null` field is removed (absent); a `null` value
/// of a string map (`tags`, `labels`) becomes `""`.
pub fn normalize_nulls(v: &mut Value) {
    normalize(v, false);
}

fn normalize(v: &mut Value, is_map: bool) {
    match v {
        Value::Object(fields) => {
            if is_map {
                for value in fields.values_mut() {
                    if value.is_null() {
                        *value = Value::String(String::new());
                    }
                }
            } else {
                fields.retain(|_, value| !value.is_null());
            }
            for (k, value) in fields.iter_mut() {
                normalize(value, MAP_FIELDS.contains(&k.as_str()));
            }
        }
        Value::Array(items) => {
            for item in items {
                normalize(item, false);
            }
        }
        _ => {}
    }
}

/// Decodes `value` into `T`, ignoring unknown fields. Returns the value and one warning per
/// unknown field, or every field that does not decode (paths relative to `value`, prefixed
/// with `prefix` when not empty).
pub fn decode_spec<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
) -> Result<(T, Vec<String>), ValidationError> {
    let mut errs = Violations::new();
    let mut reported = 0;
    loop {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = serde_path_to_error::Deserializer::new(&value, &mut track);
            serde_ignored::deserialize(de, |path: serde_ignored::Path<'_>| {
                unknown.push(ignored_path(&path));
            })
        };
        match result {
            Ok(t) => {
                // Invariant: `reported` counts the violations recorded in `errs`.
                if reported > 0 {
                    return Err(errs.into_result().expect_err("errors were recorded"));
                }
                let warnings = unknown
                    .into_iter()
                    .map(|segs| unknown_warning(prefix, &segs))
                    .collect();
                return Ok((t, warnings));
            }
            Err(e) => {
                let segs = error_path(&track.path());
                errs.add(join(prefix, &field_path(&segs)), plain_message(&e));
                reported += 1;
                // Drop the offending field and decode again, to find the next one
                // (`errs` holds at least the violation just recorded).
                if reported >= MAX_ERRORS || !remove_at(&mut value, &segs) {
                    return Err(errs.into_result().expect_err("errors were recorded"));
                }
            }
        }
    }
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut p = path;
    loop {
        match p {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Seg::Index(*index));
                p = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Seg::Key(key.clone()));
                p = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => p = parent,
        }
    }
    out.reverse();
    out
}

fn error_path(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {
                None
            }
        })
        .collect()
}

/// Kuma's path syntax: `a.b`, `[3]`, and `["key"]` for the keys of string maps.
fn field_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    let mut parent_is_map = false;
    for s in segs {
        match s {
            Seg::Index(i) => {
                out.push_str(&format!("[{i}]"));
                parent_is_map = false;
            }
            Seg::Key(k) if parent_is_map => {
                out.push_str(&format!("[{k:?}]"));
                parent_is_map = false;
            }
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
                parent_is_map = MAP_FIELDS.contains(&k.as_str());
            }
        }
    }
    out
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// `unknown field "bogus" at networking.inbound[0]` (or `unknown field "bogus"` at the top).
fn unknown_warning(prefix: &str, segs: &[Seg]) -> String {
    let (name, parent) = match segs.split_last() {
        Some((Seg::Key(k), parent)) => (k.clone(), parent),
        Some((Seg::Index(i), parent)) => (i.to_string(), parent),
        None => (String::new(), segs),
    };
    let at = join(prefix, &field_path(parent));
    if at.is_empty() {
        format!("unknown field {name:?}: ignored")
    } else {
        format!("unknown field {name:?} at {at}: ignored")
    }
}

/// serde's message without the `at line 1 column 2` suffix a Value never has anyway.
fn plain_message(e: &serde_json::Error) -> String {
    e.to_string()
}

/// Removes the value at `segs` from `value` (a list item that does not decode takes its
/// whole list with it). False when nothing could be removed.
fn remove_at(value: &mut Value, segs: &[Seg]) -> bool {
    // The deepest object key on the path: removing it always shrinks the document.
    let Some(cut) = segs.iter().rposition(|s| matches!(s, Seg::Key(_))) else {
        return false;
    };
    let mut cur = value;
    for s in &segs[..cut] {
        cur = match (s, cur) {
            (Seg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (&segs[cut], cur) {
        (Seg::Key(k), Value::Object(m)) => m.shift_remove(k).is_some(),
        _ => false,
    }
}

/// A protobuf `uint32`: a JSON number or a quoted one (`"8080"`).
pub fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = Value::deserialize(d)?;
    to_uint32(&v).map_err(D::Error::custom)
}

/// An optional protobuf `uint32` (or `UInt32Value`).
pub fn opt_uint32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    to_uint32(&v).map(Some).map_err(D::Error::custom)
}

fn to_uint32(v: &Value) -> Result<u32, String> {
    let n = match v {
        Value::Number(n) => n.clone(),
        Value::String(s) => match s.trim().parse::<serde_json::Number>() {
            Ok(n) => n,
            Err(_) => return Err(format!("invalid value: string {s:?}, expected a uint32")),
        },
        other => return Err(format!("invalid type: {}, expected a uint32", kind(other))),
    };
    n.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("invalid value: {n}, expected a uint32"))
}

/// An optional `google.protobuf.Duration` in Go's syntax (`10s`, `1m30s`, `0`), kept as
/// written; a leading `-` is allowed as protobuf durations may be negative.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let unsigned = s.strip_prefix('-').unwrap_or(&s);
            crate::duration::parse(unsigned)
                .map_err(|e| D::Error::custom(format!("bad Duration: {e}")))?;
            Ok(Some(s))
        }
        other => Err(D::Error::custom(format!(
            "invalid type: {}, expected a duration string such as \"10s\"",
            kind(&other)
        ))),
    }
}

/// The JSON kind of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The empty message (`Tcp {}`), which still names its unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        #[serde(default, deserialize_with = "uint32")]
        port: u32,
        #[serde(default)]
        tags: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default)]
        inbound: Vec<Inner>,
        #[serde(default)]
        name: String,
    }

    #[test]
    fn unknown_fields_are_named_and_ignored() {
        let (o, w) = decode_spec::<Outer>(
            json!({"bogus": 1, "inbound": [{"port": "80", "extra": true}]}),
            "",
        )
        .unwrap();
        assert_eq!(o.inbound[0].port, 80);
        assert!(o.inbound[0].tags.is_empty() && o.name.is_empty());
        assert_eq!(
            w,
            [
                "unknown field \"bogus\": ignored",
                "unknown field \"extra\" at inbound[0]: ignored"
            ]
        );
        let (_, w) = decode_spec::<Outer>(json!({"x": {}}), "spec").unwrap();
        assert_eq!(w, ["unknown field \"x\" at spec: ignored"]);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = decode_spec::<Outer>(
            json!({"name": 4, "inbound": [{"port": -1, "tags": {"version": 1, "ok": "x"}}, {"port": "abc"}]}),
            "",
        )
        .unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "inbound[0].port",
                "inbound[0].tags[\"version\"]",
                "inbound[1].port"
            ],
            "{err}"
        );
        assert_eq!(
            err.violations[1].message,
            "invalid value: -1, expected a uint32"
        );
    }

    #[test]
    fn nulls_read_as_absent_and_empty_map_values() {
        let mut v = json!({"name": null, "inbound": [{"port": null, "tags": {"version": null}}]});
        normalize_nulls(&mut v);
        assert_eq!(v, json!({"inbound": [{"tags": {"version": ""}}]}));
    }

    #[test]
    fn durations_and_quoted_numbers() {
        #[derive(Debug, Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "opt_duration")]
            interval: Option<String>,
            #[serde(default, deserialize_with = "opt_uint32")]
            n: Option<u32>,
        }
        let (p, _) = decode_spec::<P>(json!({"interval": "1m30s", "n": "5"}), "").unwrap();
        assert_eq!((p.interval.as_deref(), p.n), (Some("1m30s"), Some(5)));
        let err = decode_spec::<P>(json!({"interval": "10", "n": 1.5}), "").unwrap_err();
        assert_eq!(err.violations[0].field, "interval");
        assert!(
            err.violations[0].message.starts_with("bad Duration"),
            "{err}"
        );
        assert_eq!(err.violations[1].field, "n");
    }
}
