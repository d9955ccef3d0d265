//! Decisions the user took: pinned pairs are taken as given (both tensors leave the problem
//! before the engine runs, and come back as matches resolved [`super::Resolution::Pinned`]);
//! forbidden pairs are vetoed where every pair is scored, so the rest is re-solved around
//! them.

use crate::error::{Error, Result};
use crate::spec::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Pairs the user decided, by names as written in the files (or normalized names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// (source, target) pairs mapped whatever the scores say.
    pub pins: Vec<(String, String)>,
    /// (source, target) pairs never mapped.
    pub forbids: Vec<(String, String)>,
    /// Map the pinned pairs and nothing else (to review an edited mapping as it is): every
    /// other tensor is left unmatched, with the reason the engine finds for it.
    pub exclusive: bool,
}

/// [`Constraints`] as tensor indices of both specs.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub pins: Vec<(usize, usize)>,
    pub forbid: HashSet<(usize, usize)>,
}

impl Constraints {
    /// Whether there is nothing to constrain.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty() && self.forbids.is_empty() && !self.exclusive
    }

    /// Checks every name against the specs and turns the pairs into indices.
    ///
    /// Errors: a name that is no tensor of its side (with the closest names); a tensor
    /// pinned twice on either side; a pair both pinned and forbidden; a pin whose shapes
    /// cannot be made to agree (not equal, not a 2-D transpose, not the same elements).
    pub(crate) fn resolve(
        &self,
        source: &ModelSpec,
        target: &ModelSpec,
        allow_reshape: bool,
    ) -> Result<Resolved> {
        // Indexing every name of two 90k-tensor models costs more than the rest of the
        // mapper's preparation: only when there is a name to look up.
        if self.pins.is_empty() && self.forbids.is_empty() {
            return Ok(Resolved::default());
        }
        let (si, ti) = (source.written_index(), target.written_index());
        let find = |index: &HashMap<&str, usize>, spec: &ModelSpec, side: &str, name: &str| {
            index.get(name).copied().ok_or_else(|| Error::MissingKey {
                context: format!("{side} {}", spec.path),
                key: name.to_string(),
                hint: closest(name, spec),
            })
        };
        let mut out = Resolved::default();
        let (mut seen_s, mut seen_t) = (HashMap::new(), HashMap::new());
        for (s, t) in &self.pins {
            let (a, b) = (
                find(&si, source, "source", s)?,
                find(&ti, target, "target", t)?,
            );
            if let Some(prev) = seen_s.insert(a, t) {
                return Err(Error::invalid(
                    "pin",
                    format!("'{s}' is pinned to both '{prev}' and '{t}'; pin it once"),
                ));
            }
            if let Some(prev) = seen_t.insert(b, s) {
                return Err(Error::invalid(
                    "pin",
                    format!(
                        "'{prev}' and '{s}' are both pinned to '{t}'; a target takes one tensor"
                    ),
                ));
            }
            let (ss, ts) = (&source.tensors[a].shape, &target.tensors[b].shape);
            if crate::score::shape_relation(ss, ts, allow_reshape).is_none() {
                return Err(Error::Mismatch {
                    context: format!("pin {s}={t}"),
                    message: format!(
                        "source shape {ss:?} cannot become the target's {ts:?} (not equal or transposed; the same elements in another shape need --shape-tolerance above 0); pin another pair"
                    ),
                });
            }
            out.pins.push((a, b));
        }
        for (s, t) in &self.forbids {
            let pair = (
                find(&si, source, "source", s)?,
                find(&ti, target, "target", t)?,
            );
            if out.pins.contains(&pair) {
                return Err(Error::invalid(
                    "forbid",
                    format!("{s}={t} is both pinned and forbidden; drop one"),
                ));
            }
            out.forbid.insert(pair);
        }
        Ok(out)
    }
}

/// Parses `SRC=TGT` (the names may not contain `=`).
pub fn parse_pair(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((s, t)) if !s.trim().is_empty() && !t.trim().is_empty() && !t.contains('=') => {
            Ok((s.trim().to_string(), t.trim().to_string()))
        }
        _ => Err(Error::invalid(
            "pair",
            format!("'{text}': expected SOURCE=TARGET, e.g. 'fc.weight=head.weight'"),
        )),
    }
}

/// `"; did you mean 'a'?"` for the closest name of `spec`, or a pointer to `inspect`.
fn closest(name: &str, spec: &ModelSpec) -> String {
    let best = spec
        .tensors
        .iter()
        .map(|t| {
            (
                strsim::normalized_levenshtein(name, &t.original_name),
                &t.original_name,
            )
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, n)) if score >= 0.5 => format!("; did you mean '{n}'?"),
        _ => "; list the tensors with `weightmap inspect`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_refuse_garbage() {
        assert_eq!(
            parse_pair("a.weight=b.weight").unwrap(),
            ("a.weight".into(), "b.weight".into())
        );
        for bad in ["a.weight", "=b", "a=", "a=b=c"] {
            assert!(parse_pair(bad).is_err(), "{bad}");
        }
    }
}
