//! Rename rules: an ordered list of regular expressions and replacements, applied with the
//! semantics of Hugging Face's `from_pretrained(..., key_mapping=...)`: for each key, the
//! first pattern that matches rewrites it (every match in the key, as `re.subn` does);
//! a key no pattern matches keeps its name (HF) or is reported (`apply --rules`).
//!
//! Patterns and replacements are written as Python's `re` writes them (`layers\.(\d+)\.`,
//! `\1`), so one file serves `transformers`, the exported Python converter and weightmap.
//!
//! The file (`weightmap export --format rules`):
//! `{"format": "weightmap.rules", "version": 1, "rules": [{"pattern", "replacement"}],
//! "transforms": {target key: "transpose" | {"reshape": [dims]}}}`; a plain
//! `{pattern: replacement}` object (an HF `key_mapping`) is read as well.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The `format` field of a rules file.
pub const RULES_FORMAT: &str = "weightmap.rules";
/// The `version` field of a rules file this weightmap writes and reads.
pub const RULES_VERSION: u64 = 1;

/// One rename: a Python-syntax regular expression and its replacement (`\1` for groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The pattern, searched anywhere in a key (anchor it with `^...$` to match whole keys).
    pub pattern: String,
    /// The replacement, with `\N` for the N-th group.
    pub replacement: String,
}

/// Ordered rename rules, first match wins, with the transforms of the renamed tensors.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    compiled: Vec<(regex::Regex, String)>,
    /// Per target key, the transform its tensor needs (`"transpose"`, `{"reshape": [...]}`),
    /// in the JSON form of a mapping file.
    pub transforms: Map<String, Value>,
}

impl Rules {
    /// Compiles `rules`; errors name the rule that does not compile.
    pub fn new(rules: Vec<Rule>, transforms: Map<String, Value>) -> Result<Rules> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let re = regex::Regex::new(&r.pattern).map_err(|e| {
                    Error::invalid("rules", format!("rule {}: '{}': {e}", i + 1, r.pattern))
                })?;
                Ok((re, python_replacement(&r.replacement)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rules {
            rules,
            compiled,
            transforms,
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The new name of `key`: rewritten by the first rule whose pattern matches, or `None`
    /// when none does.
    pub fn rename(&self, key: &str) -> Option<String> {
        self.compiled
            .iter()
            .find(|(re, _)| re.is_match(key))
            .map(|(re, rep)| re.replace_all(key, rep.as_str()).into_owned())
    }

    /// Reads a rules file (or an HF `key_mapping` object).
    ///
    /// Errors: the file cannot be read, is not JSON, or is not a rules file.
    pub fn load(path: &Path) -> Result<Rules> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(path, "rules JSON", e.to_string()))?;
        Rules::from_json(&value).map_err(|e| match e {
            Error::InvalidArgument { message, .. } => Error::corrupt(path, "rules JSON", message),
            other => other,
        })
    }

    /// Parses the JSON of a rules file.
    pub fn from_json(value: &Value) -> Result<Rules> {
        let bad = |m: String| Error::invalid("rules", m);
        let object = value
            .as_object()
            .ok_or_else(|| bad("expected an object".into()))?;
        if object.get("format").and_then(Value::as_str) != Some(RULES_FORMAT) {
            // An HF key_mapping: {pattern: replacement}, in order.
            let rules = object
                .iter()
                .map(|(p, r)| match r {
                    Value::String(r) => Ok(Rule {
                        pattern: p.clone(),
                        replacement: r.clone(),
                    }),
                    other => Err(bad(format!(
                        "'{p}': a replacement must be a string, not {other}; is this a rules file (`weightmap export --format rules`)?"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            return Rules::new(rules, Map::new());
        }
        let version = object.get("version").and_then(Value::as_u64);
        if version != Some(RULES_VERSION) {
            return Err(bad(format!(
                "version {version:?}: this weightmap reads version {RULES_VERSION}"
            )));
        }
        let rules = object
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("\"rules\" must be a list".into()))?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("rule {}: \"{k}\" must be a string", i + 1)))
                };
                Ok(Rule {
                    pattern: field("pattern")?,
                    replacement: field("replacement")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let transforms = match object.get("transforms") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "\"transforms\" must be an object, not {other}"
                )))
            }
        };
        Rules::new(rules, transforms)
    }

    /// The rules file's JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "format": RULES_FORMAT,
            "version": RULES_VERSION,
            "rules": self.rules.iter().map(|r| json!({"pattern": r.pattern, "replacement": r.replacement})).collect::<Vec<_>>(),
            "transforms": self.transforms,
        })
    }

    /// The rules as an HF `key_mapping` object `{pattern: replacement}`, in order.
    pub fn to_key_mapping(&self) -> Value {
        Value::Object(
            self.rules
                .iter()
                .map(|r| (r.pattern.clone(), Value::String(r.replacement.clone())))
                .collect(),
        )
    }
}

/// A Python `re` replacement (`\1`, `\g<1>`, `\\`) in the `regex` crate's syntax (`${1}`,
/// a literal `$` written `$$`).
fn python_replacement(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    let name: String = chars.by_ref().skip(1).take_while(|&c| c != '>').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                _ => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let r = pairs
            .iter()
            .map(|(p, r)| Rule {
                pattern: p.to_string(),
                replacement: r.to_string(),
            })
            .collect();
        Rules::new(r, Map::new()).unwrap()
    }

    #[test]
    fn first_matching_rule_rewrites_with_python_groups() {
        let r = rules(&[
            (
                r"^layers\.(\d+)\.attn\.(\w+)$",
                r"model.layers.\1.self_attn.\2",
            ),
            (r"^(.*)$", r"model.\g<1>"),
        ]);
        assert_eq!(
            r.rename("layers.12.attn.q").as_deref(),
            Some("model.layers.12.self_attn.q")
        );
        assert_eq!(
            r.rename("norm.weight").as_deref(),
            Some("model.norm.weight")
        );
    }

    #[test]
    fn no_match_is_none_and_dollars_stay_literal() {
        let r = rules(&[(r"^a$", r"b$1")]);
        assert_eq!(r.rename("c"), None);
        assert_eq!(r.rename("a").as_deref(), Some("b$1"));
    }

    #[test]
    fn files_round_trip_and_bad_patterns_are_refused() {
        let r = rules(&[(r"^x\.(\d+)$", r"y.\1")]);
        let back = Rules::from_json(&r.to_json()).unwrap();
        assert_eq!(back.rules(), r.rules());
        let hf = Rules::from_json(&r.to_key_mapping()).unwrap();
        assert_eq!(hf.rules(), r.rules());
        assert!(Rules::from_json(&json!({"(": "x"})).is_err());
        assert!(
            Rules::from_json(&json!({"format": RULES_FORMAT, "version": 9, "rules": []})).is_err()
        );
    }
}
