//! JSON files: bounded reads that refuse an object with the same key twice, and atomic
//! writes (model specs, sharded-safetensors indexes, execution orders, mappings, reports).
//!
//! `serde_json` keeps the last of two equal keys silently, so a safetensors header, a
//! sharded index or a mapping file that names a tensor twice would be read as naming it
//! once, with whichever entry came last. Every JSON file weightmap reads goes through
//! [`from_slice`] instead, which builds the same [`Value`] but stops at the first repeated
//! key. Nesting stays bounded by `serde_json`'s recursion limit (128).

use crate::error::{Error, Result};
use crate::output::OutputFile;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// A [`Value`] whose objects had no repeated key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "the key \"{key}\" appears twice in one object; keep one of the two entries"
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses `bytes` as JSON, refusing objects with a repeated key (the message names it).
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

/// What the top level of a JSON document says of its kind, read without building its
/// values (a 90k-tensor model spec is 13 MB, parsed whole again by its reader).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JsonKind {
    /// The document is an object with a `"weight_map"` key (a sharded-safetensors index).
    pub weight_map: bool,
    /// The document is an object whose `"tensors"` is a list (a model spec).
    pub tensors_list: bool,
}

/// Which shape a JSON value has, its contents skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object(JsonKind),
    List,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Shape, D::Error> {
        /// Reads the keys of the top-level object; skips every other value.
        struct Top(bool);
        impl<'de> Visitor<'de> for Top {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E>(self) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Shape, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Shape::List)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Shape, A::Error> {
                let mut kind = JsonKind::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match (self.0, key.as_ref()) {
                        (true, "weight_map") => {
                            kind.weight_map = true;
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        (true, "tensors") => {
                            let value = map.next_value_seed(Skip)?;
                            kind.tensors_list |= value == Shape::List;
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Shape::Object(kind))
            }
        }
        /// A value below the top level: its shape only.
        struct Skip;
        impl<'de> serde::de::DeserializeSeed<'de> for Skip {
            type Value = Shape;
            fn deserialize<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Shape, D::Error> {
                d.deserialize_any(Top(false))
            }
        }
        d.deserialize_any(Top(true))
    }
}

/// Reads what the top level of the JSON file at `path` says of its kind ([`JsonKind`]),
/// bounded by [`MAX_JSON_BYTES`]; a document that is not an object has neither key.
pub fn read_json_kind(path: &Path) -> Result<JsonKind> {
    let text = read_bounded(path)?;
    match serde_json::from_slice::<Shape>(&text) {
        Ok(Shape::Object(kind)) => Ok(kind),
        Ok(_) => Ok(JsonKind::default()),
        Err(e) => Err(Error::corrupt(path, "JSON", e.to_string())),
    }
}

/// Version of every JSON document weightmap prints with `--json` (and of `map --report`):
/// one number shared by all commands, raised when a field is removed, renamed or changes
/// meaning in any of them; new fields may appear without a raise. The README documents the
/// schemas of this version.
pub const SCHEMA_VERSION: u32 = 1;

/// `value` as a JSON object whose first key is `"schema_version"` ([`SCHEMA_VERSION`]);
/// a value that is not an object is wrapped as `{"schema_version", "value"}`.
pub fn versioned(value: &impl Serialize) -> serde_json::Result<Value> {
    let mut out = serde_json::Map::new();
    out.insert("schema_version".into(), SCHEMA_VERSION.into());
    match serde_json::to_value(value)? {
        Value::Object(fields) => {
            // A document already versioned keeps one key, in the first place.
            out.extend(fields.into_iter().filter(|(k, _)| k != "schema_version"));
        }
        other => {
            out.insert("value".into(), other);
        }
    }
    Ok(Value::Object(out))
}

/// Largest JSON file (index or model spec) read whole; model specs of 100k tensors are ~30 MB.
pub const MAX_JSON_BYTES: u64 = 1 << 30;

/// Reads a JSON file whole, bounded by [`MAX_JSON_BYTES`].
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_bounded(path)?;
    from_slice(&text).map_err(|e| Error::corrupt(path, "JSON", e.to_string()))
}

/// The bytes of the file at `path`, refused past [`MAX_JSON_BYTES`] before any is read.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(Error::corrupt(
            path,
            "JSON",
            format!("{len} bytes is larger than the {MAX_JSON_BYTES}-byte limit"),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON (and a final newline) to `path`, through a temporary file
/// renamed into place: no partial file on failure. An existing `path` is replaced.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_json_checked(path, value, &[], true)
}

/// [`write_json`] that refuses to write over one of `inputs`, and over an existing file
/// unless `force`.
pub fn write_json_checked(
    path: &Path,
    value: &impl Serialize,
    inputs: &[&Path],
    force: bool,
) -> Result<()> {
    let mut out = OutputFile::create(path, inputs, force)?;
    let mut writer = std::io::BufWriter::new(out.file());
    serde_json::to_writer_pretty(&mut writer, value).map_err(|e| Error::io(path, e.into()))?;
    writer.write_all(b"\n").map_err(|e| Error::io(path, e))?;
    writer.flush().map_err(|e| Error::io(path, e))?;
    drop(writer);
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_puts_schema_version_first_once() {
        let v = versioned(&serde_json::json!({"a": 1, "schema_version": 7, "b": [2]})).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["schema_version", "a", "b"]);
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        let wrapped = versioned(&[1, 2]).unwrap();
        assert_eq!(wrapped["value"], serde_json::json!([1, 2]));
    }

    #[test]
    fn same_value_as_serde_json() {
        let text = br#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}}"#;
        assert_eq!(
            from_slice(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn repeated_key_is_named() {
        let e = from_slice(br#"{"x": {"w": 1, "w": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("\"w\" appears twice"), "{e}");
    }

    #[test]
    fn kind_is_read_from_the_top_level_only() {
        let dir = tempfile::tempdir().unwrap();
        let kind = |text: &str| {
            let path = dir.path().join("k.json");
            std::fs::write(&path, text).unwrap();
            read_json_kind(&path).map(|k| (k.weight_map, k.tensors_list))
        };
        assert_eq!(
            kind(r#"{"metadata": {}, "weight_map": {"a": "x"}}"#).unwrap(),
            (true, false)
        );
        assert_eq!(
            kind(r#"{"tensors": [{"name": "a\"b"}], "x": [1, null]}"#).unwrap(),
            (false, true)
        );
        assert_eq!(kind(r#"{"tensors": {"a": 1}}"#).unwrap(), (false, false));
        assert_eq!(
            kind(r#"{"x": {"tensors": [], "weight_map": 1}}"#).unwrap(),
            (false, false)
        );
        assert_eq!(kind(r#"[{"tensors": []}]"#).unwrap(), (false, false));
        assert_eq!(kind("3.5").unwrap(), (false, false));
        let e = kind(r#"{"tensors": [1, 2"#).unwrap_err().to_string();
        assert!(e.contains("EOF while parsing"), "{e}");
    }
}
