//! What `map` found, in the forms PyTorch users load checkpoints with: rename rules
//! induced from a mapping's one-to-one renames (an HF `key_mapping`, weightmap's rules file)
//! and a standalone Python converter.
//!
//! Rule induction: each rename becomes a template (its source name with every all-digit
//! component a group `(\d+)` that the target reuses in the same order, everything else
//! literal, anchored `^...$`); renames sharing a template share one rule, most used first.
//! Then every rename is checked with first-match semantics, and one that a rule gets wrong
//! (a layer index the target spells differently) gets an exact rule of its own in front.
//! The rules reproduce every rename by construction.

use crate::mapping::{Conversion, Mapping};
use crate::rules::{Rule, Rules};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The rules that reproduce every rename of `mapping` (first match wins), with the
/// transforms of the renamed tensors keyed by target name.
pub fn induce_rules(mapping: &Mapping) -> crate::Result<Rules> {
    let renames: Vec<(&str, &str)> = mapping
        .entries
        .iter()
        .map(|e| (e.source.as_str(), e.target.as_str()))
        .collect();
    // Templates, most renames first (ties in first-seen order, for a stable file).
    let mut order: Vec<(String, String)> = vec![];
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for (s, t) in &renames {
        let key = template(s, t);
        let n = count.entry(key.clone()).or_insert(0);
        if *n == 0 {
            order.push(key);
        }
        *n += 1;
    }
    order.sort_by_key(|k| std::cmp::Reverse(count[k]));
    let mut rules: Vec<Rule> = order
        .into_iter()
        .map(|(pattern, replacement)| Rule {
            pattern,
            replacement,
        })
        .collect();
    // Exact rules in front for the renames the general ones get wrong.
    let general = Rules::new(rules.clone(), Map::new())?;
    let exact: Vec<Rule> = renames
        .iter()
        .filter(|(s, t)| general.rename(s).as_deref() != Some(*t))
        .map(|(s, t)| Rule {
            pattern: format!("^{}$", regex::escape(s)),
            replacement: t.replace('\\', r"\\"),
        })
        .collect();
    if !exact.is_empty() {
        rules.splice(0..0, exact);
    }
    let transforms: Map<String, Value> = mapping
        .entries
        .iter()
        .filter_map(|e| Some((e.target.clone(), e.transform.as_ref()?.to_json())))
        .collect();
    Rules::new(rules, transforms)
}

/// The mapping `rules` give the tensors of `source` (by their names as written): each
/// renamed by the first matching rule, with its transform. A key no rule matches is an
/// error naming it, unless `keep_unmatched` (then it is left out of the mapping, for
/// `apply --keep-unmatched` to keep under its own name).
pub fn mapping_from_rules(
    rules: &Rules,
    source: &crate::spec::ModelSpec,
    keep_unmatched: bool,
    context: &str,
) -> crate::Result<Mapping> {
    let mut object = Map::new();
    let mut unmatched = vec![];
    for t in &source.tensors {
        match rules.rename(&t.original_name) {
            Some(new) => {
                let v = match rules.transforms.get(&new) {
                    Some(how) => serde_json::json!({"target": new, "transform": how}),
                    None => Value::String(new),
                };
                object.insert(t.original_name.clone(), v);
            }
            None => unmatched.push(t.original_name.as_str()),
        }
    }
    if !unmatched.is_empty() && !keep_unmatched {
        return Err(crate::Error::MissingKey {
            context: format!("{context}: no rule renames {} source key(s)", unmatched.len()),
            key: unmatched[0].to_string(),
            hint: "; add a rule for it, or pass --keep-unmatched to keep such keys under their own names".into(),
        });
    }
    Mapping::from_json(&Value::Object(object))
        .map_err(|m| crate::Error::invalid("rules", format!("{context}: {m}")))
}

/// The template of one rename: (anchored pattern, replacement). All-digit components of
/// the target reuse equal ones of the source, matched from the right (the indices nearest
/// the leaf repeat; `layer1.0` → `stages.0.blocks.0` keeps the stage literal); a leaf
/// name both share (`weight`, `running_mean`) is a group too. Other components stay literal.
fn template(source: &str, target: &str) -> (String, String) {
    let is_digits = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit());
    let sc: Vec<&str> = source.split('.').collect();
    let tc: Vec<&str> = target.split('.').collect();
    // Target component -> source component it repeats.
    let mut link: Vec<Option<usize>> = vec![None; tc.len()];
    let mut limit = sc.len();
    for j in (0..tc.len()).rev() {
        if !is_digits(tc[j]) {
            continue;
        }
        if let Some(i) = (0..limit).rev().find(|&i| sc[i] == tc[j]) {
            link[j] = Some(i);
            limit = i;
        }
    }
    let (ls, lt) = (sc.len() - 1, tc.len() - 1);
    if sc[ls] == tc[lt] && !is_digits(sc[ls]) && link[lt].is_none() && (ls > 0 || lt > 0) {
        link[lt] = Some(ls);
    }
    let mut group_of: Vec<Option<usize>> = vec![None; sc.len()];
    let mut next = 0;
    for (i, group) in group_of.iter_mut().enumerate() {
        if link.contains(&Some(i)) {
            next += 1;
            *group = Some(next);
        }
    }
    let mut pattern = String::from("^");
    for (i, c) in sc.iter().enumerate() {
        if i > 0 {
            pattern.push_str(r"\.");
        }
        match group_of[i] {
            Some(_) if is_digits(c) => pattern.push_str(r"(\d+)"),
            Some(_) => pattern.push_str(r"([^.]+)"),
            None => pattern.push_str(&regex::escape(c)),
        }
    }
    pattern.push('$');
    let replacement: Vec<String> = tc
        .iter()
        .enumerate()
        .map(|(j, c)| match link[j].and_then(|i| group_of[i]) {
            Some(g) => format!(r"\{g}"),
            None => c.replace('\\', r"\\"),
        })
        .collect();
    (pattern, replacement.join("."))
}

/// The conversions of a mapping as the Python converter's data: the op's fields only
/// (what `map` thought of them stays in the mapping file), with `ambiguous` kept so that
/// a reader of the module sees what to check.
fn conversions_data(conversions: &[Conversion]) -> Value {
    Value::Array(
        conversions
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.remove("confidence");
                    o.remove("reason");
                }
                v
            })
            .collect(),
    )
}

/// A standalone Python module with `convert(state_dict) -> state_dict`: the rules,
/// transforms and conversions (split, concat, stack, ... as the mapping file describes
/// them) as data, the renames applied with HF's first-match semantics; needs only torch.
pub fn python_module(rules: &Rules, conversions: &[Conversion], origin: &str) -> String {
    let rules_data: Vec<Value> = rules
        .rules()
        .iter()
        .map(|r| Value::Array(vec![r.pattern.clone().into(), r.replacement.clone().into()]))
        .collect();
    let rules_json = serde_json::to_string_pretty(&Value::Array(rules_data)).unwrap_or_default();
    let transforms_json =
        serde_json::to_string_pretty(&Value::Object(rules.transforms.clone())).unwrap_or_default();
    let conversions_json =
        serde_json::to_string_pretty(&conversions_data(conversions)).unwrap_or_default();
    format!(
        r#""""Converts a state dict to the target model's names (written by weightmap export from
{origin}).

    import torch, convert
    target_model.load_state_dict(convert.convert(torch.load("source.pth")))

RULES: (pattern, replacement) in Python `re` syntax; for each key the first pattern that
matches renames it (as transformers' key_mapping does). TRANSFORMS: per target key,
"transpose" or {{"reshape": [dims]}}. CONVERSIONS: ops that make target tensors from
several source tensors or several from one, as in weightmap's mapping file (kind, sources,
targets in op order, dim, sizes, group_size, concat_dim, transpose: each part on the many
side transposed); their sources are not renamed. Keys no rule matches and no conversion
uses are left out (strict=True raises on them).
"""
import json
import re

import torch

RULES = json.loads(r'''{rules_json}''')

TRANSFORMS = json.loads(r'''{transforms_json}''')

CONVERSIONS = json.loads(r'''{conversions_json}''')

_COMPILED = [(re.compile(p), r) for p, r in RULES]


def rename(key):
    """The target name of `key`, or None when no rule matches it."""
    for pattern, replacement in _COMPILED:
        new, n = pattern.subn(replacement, key)
        if n:
            return new
    return None


def _transform(tensor, how):
    if how == "transpose":
        return tensor.t().contiguous()
    if isinstance(how, dict) and "reshape" in how:
        return tensor.reshape(how["reshape"]).contiguous()
    raise ValueError(f"unknown transform {{how!r}}")


def _run(c, xs):
    """The target tensors of conversion `c` from its source tensors `xs`, in op order."""
    kind, dim, t = c["kind"], c.get("dim", 0), c.get("transpose", False)
    if t and kind in ("concat", "stack", "stack_of_concat"):
        xs = [x.t() for x in xs]
    if kind == "split":
        ys = torch.split(xs[0], c["sizes"], dim)
    elif kind == "concat":
        ys = [torch.cat(xs, dim)]
    elif kind == "stack":
        ys = [torch.stack(xs, dim)]
    elif kind == "unstack":
        ys = torch.unbind(xs[0], dim)
    elif kind == "stack_of_concat":
        g = c["group_size"]
        ys = [torch.stack([torch.cat(xs[i:i + g], c["concat_dim"]) for i in range(0, len(xs), g)], dim)]
    elif kind == "split_of_unstack":
        ys = [p for e in torch.unbind(xs[0], dim) for p in torch.split(e, c["sizes"], c["concat_dim"])]
    else:
        raise ValueError(f"unknown conversion {{kind!r}}")
    if t and kind in ("split", "unstack", "split_of_unstack"):
        ys = [y.t() for y in ys]
    if len(ys) != len(c["targets"]):
        raise ValueError(f"{{kind}} of {{c['sources'][:1]}} gives {{len(ys)}} tensors for {{len(c['targets'])}} targets")
    return [y.contiguous() for y in ys]


def convert(state_dict, strict=False):
    """The state dict under the target's names, transforms and conversions applied."""
    out = {{}}
    consumed = set()
    for c in CONVERSIONS:
        missing = [s for s in c["sources"] if s not in state_dict]
        if missing:
            raise KeyError(f"{{c['kind']}} needs {{missing[0]!r}}, which the state dict lacks")
        for name, y in zip(c["targets"], _run(c, [state_dict[s] for s in c["sources"]])):
            if name in out:
                raise KeyError(f"two conversions write {{name!r}}")
            out[name] = y
        consumed.update(c["sources"])
    for key, tensor in state_dict.items():
        if key in consumed:
            continue
        new = rename(key)
        if new is None:
            if strict:
                raise KeyError(f"no rule renames {{key!r}}")
            continue
        if new in out:
            raise KeyError(f"{{key!r}} and another key both become {{new!r}}")
        how = TRANSFORMS.get(new)
        out[new] = _transform(tensor, how) if how is not None else tensor
    return out
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappingEntry;

    fn mapping(pairs: &[(String, String)]) -> Mapping {
        Mapping {
            entries: pairs
                .iter()
                .map(|(s, t)| MappingEntry {
                    source: s.clone(),
                    target: t.clone(),
                    transform: None,
                })
                .collect(),
            conversions: vec![],
        }
    }

    #[test]
    fn indices_become_groups_and_every_rename_is_reproduced() {
        let mut pairs = vec![];
        for l in 0..12 {
            for e in 0..8 {
                for w in ["w1", "w2", "w3"] {
                    pairs.push((
                        format!("layers.{l}.moe.experts.{e}.{w}.weight"),
                        format!("model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight"),
                    ));
                }
            }
            pairs.push((
                format!("layers.{l}.attn.wq.weight"),
                format!("model.layers.{l}.self_attn.q_proj.weight"),
            ));
        }
        // Stages numbered from 1 in the source, from 0 in the target: not a group.
        for b in 0..3 {
            pairs.push((
                format!("layer1.{b}.conv.weight"),
                format!("stages.0.blocks.{b}.conv.weight"),
            ));
        }
        pairs.push(("tok.weight".into(), "model.embed_tokens.weight".into()));
        let m = mapping(&pairs);
        let rules = induce_rules(&m).unwrap();
        for (s, t) in &pairs {
            assert_eq!(rules.rename(s).as_deref(), Some(t.as_str()), "{s}");
        }
        assert!(rules.rules().len() <= 8, "{:?}", rules.rules());
    }

    #[test]
    fn the_python_module_carries_rules_as_data() {
        let m = mapping(&[("a.0.w".into(), "b.0.w".into())]);
        let text = python_module(&induce_rules(&m).unwrap(), &[], "m.json");
        assert!(text.contains(r#"(\\d+)"#), "{text}");
        assert!(text.contains("def convert(state_dict"));
    }
}
