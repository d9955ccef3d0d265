//! What `map` found, in the forms PyTorch users load checkpoints with: rename rules
//! induced from a mapping's one-to-one renames (an HF `key_mapping`, weightmap's rules file)
//! and a standalone Python converter.
//!
//! Rule induction: each rename becomes a template, an anchored pattern and its replacement
//! in which what the target repeats of the source is a group: its numbers (layer, block and
//! expert indices, also inside names: `encoder_layer_3` → `blocks.3`) and the components
//! both names end with (`module.(.+)` → `\1`). Renames sharing a template share one rule.
//! Several ways of generalizing are tried (indices linked per rename or per form of name,
//! the shared ending as a group or not, rules most used or most specific first) and the
//! smallest set wins. Every set is checked with first-match semantics, and a rename a rule
//! gets wrong gets an exact rule of its own in front: the rules reproduce every rename by
//! construction. When unmatched keys keep their names (transformers), names that stay need
//! no rule.
//!
//! A target number that no source number equals (a stage renumbered from 1 to 0,
//! `layer1.0` → `stages.0.blocks.0`) cannot be computed by a regex replacement: such
//! containers get one rule each, with the indices inside them as groups.
//!
//! How few rules can do, [`rule_lower_bound`] proves: a rule's output is its key's text
//! and its replacement's literal text, so a character a rename's target has and its
//! source lacks is literal in the rule that makes it, and that rule writes it into every
//! key it rewrites. Two renames where one needs such a character the other's target lacks
//! need two rules, whatever the patterns (lookaheads, alternations and conditional groups
//! only choose what is captured from the key).

use crate::mapping::{Conversion, Mapping};
use crate::rules::{Rule, Rules};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Whether a key that no rule matches keeps its name (transformers' `key_mapping`) or is
/// left out (weightmap's rules file, the Python converter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Kept under its own name: renames to the same name need no rule.
    Kept,
    /// Left out (or an error): every rename needs a rule.
    Dropped,
}

/// How far a template generalizes a rename (see [`template`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generalize {
    /// Indices the target repeats become `(\d+)`, a shared leaf `([^.]+)`.
    Indices,
    /// As `Indices`, and the components both names end with become one group `(.+)`.
    IndicesAndTail,
    /// Only the shared ending is a group: indices stay literal (when the target numbers
    /// its containers differently, linking equal digits is a coincidence).
    Tail,
    /// Renames of the same form (names equal but for their digit runs, `layer#.#.conv#`)
    /// are induced together: a target number becomes a group when it equals the same
    /// source number in every rename of the form, the rest stay literal (one rule per
    /// container the target renumbers); the shared ending is a group, the whole of it.
    Forms,
    /// As `Forms`, with only the last component (the leaf) as the ending's group.
    FormsLeaf,
}

/// The rules that reproduce every rename of `mapping` (first match wins), with the
/// transforms of the renamed tensors keyed by target name; see the module documentation.
/// With [`Unmatched::Kept`], renames to the same name get no rule (and no rule matches them).
pub fn induce_rules(mapping: &Mapping, unmatched: Unmatched) -> crate::Result<Rules> {
    let renames: Vec<(&str, &str)> = mapping
        .entries
        .iter()
        .map(|e| (e.source.as_str(), e.target.as_str()))
        .collect();
    let transforms: Map<String, Value> = mapping
        .entries
        .iter()
        .filter_map(|e| Some((e.target.clone(), e.transform.as_ref()?.to_json())))
        .collect();
    // Each way of generalizing, rules most used first or most specific first; the
    // smallest set that reproduces every rename wins (all do, by construction).
    let mut best: Option<Vec<Rule>> = None;
    for how in [
        Generalize::Indices,
        Generalize::IndicesAndTail,
        Generalize::Tail,
        Generalize::Forms,
        Generalize::FormsLeaf,
    ] {
        for specific_first in [false, true] {
            let rules = induce_with(&renames, unmatched, how, specific_first)?;
            if best.as_ref().is_none_or(|b| rules.len() < b.len()) {
                best = Some(rules);
            }
        }
    }
    Rules::new(best.unwrap_or_default(), transforms)
}

/// A proven minimum of rules (see [`rule_lower_bound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleBound {
    /// No ordered list of Python `re.subn` rules (pattern, replacement; first match
    /// rewrites) that reproduces the renames is shorter.
    pub rules: usize,
    /// Two renames no one rule can make (when the bound is above 1).
    pub witness: Option<Witness>,
}

/// Two renames that cannot share a rule, and the character that tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// `(source, target)`: the target has [`Witness::character`], the source does not.
    pub needs: (String, String),
    /// `(source, target)`: the target lacks [`Witness::character`].
    pub lacks: (String, String),
    /// The character.
    pub character: char,
}

/// A lower bound on the number of rules any `key_mapping` (or rules file) needs to make
/// every rename of `mapping` (those to the same name need none with [`Unmatched::Kept`]).
///
/// Why it holds: `re.subn(p, r, key)` writes the key's own text, the text groups capture
/// from it, and `r`'s literal text once per match; a group that did not take part writes
/// nothing. So a character that a target has and its source lacks is literal in `r`, and
/// every key the rule rewrites gets it. Renames whose needs the others' targets cannot
/// hold are pairwise incompatible; the largest such set found (greedily, over renames
/// grouped by the characters they need and have) is the bound.
pub fn rule_lower_bound(mapping: &Mapping, unmatched: Unmatched) -> RuleBound {
    use std::collections::BTreeSet;
    // Renames by (characters needed, characters of the target): members of one class
    // can always share a rule as far as this argument goes, so one stands for all.
    let mut classes: Vec<(BTreeSet<char>, BTreeSet<char>, usize)> = vec![];
    let mut seen: HashMap<(BTreeSet<char>, BTreeSet<char>), usize> = HashMap::new();
    for (k, e) in mapping.entries.iter().enumerate() {
        if unmatched == Unmatched::Kept && e.source == e.target {
            continue;
        }
        let has: BTreeSet<char> = e.target.chars().collect();
        let source: BTreeSet<char> = e.source.chars().collect();
        let needs: BTreeSet<char> = has.difference(&source).copied().collect();
        seen.entry((needs.clone(), has.clone())).or_insert_with(|| {
            classes.push((needs, has, k));
            classes.len() - 1
        });
    }
    let n = classes.len();
    // The character that keeps a from sharing b's rule: a needs it, b's target lacks it.
    let tell = |a: usize, b: usize| classes[a].0.difference(&classes[b].1).next().copied();
    let apart = |a: usize, b: usize| tell(a, b).is_some() || tell(b, a).is_some();
    let adjacent: Vec<Vec<bool>> = (0..n)
        .map(|a| (0..n).map(|b| a != b && apart(a, b)).collect())
        .collect();
    let degree: Vec<usize> = adjacent
        .iter()
        .map(|r| r.iter().filter(|&&x| x).count())
        .collect();
    let mut starts: Vec<usize> = (0..n).collect();
    starts.sort_by_key(|&a| std::cmp::Reverse(degree[a]));
    // Greedy cliques from the best-connected classes (bounded work on huge models).
    const STARTS: usize = 64;
    let mut best: Vec<usize> = starts.first().map(|&a| vec![a]).unwrap_or_default();
    for &start in starts.iter().take(STARTS) {
        let mut clique = vec![start];
        let mut candidates: Vec<usize> = (0..n).filter(|&b| adjacent[start][b]).collect();
        while !candidates.is_empty() {
            let &next = candidates
                .iter()
                .max_by_key(|&&c| {
                    (
                        candidates.iter().filter(|&&d| adjacent[c][d]).count(),
                        std::cmp::Reverse(c),
                    )
                })
                .expect("not empty");
            clique.push(next);
            candidates.retain(|&d| adjacent[next][d]);
        }
        if clique.len() > best.len() {
            best = clique;
        }
    }
    let pair = |c: usize| {
        let e = &mapping.entries[classes[c].2];
        (e.source.clone(), e.target.clone())
    };
    // A renumbered index tells the story best: a digit, when one tells a pair apart.
    let told: Vec<Witness> = best
        .iter()
        .flat_map(|&a| best.iter().map(move |&b| (a, b)))
        .filter_map(|(a, b)| {
            tell(a, b).map(|character| Witness {
                needs: pair(a),
                lacks: pair(b),
                character,
            })
        })
        .collect();
    let witness = told
        .iter()
        .find(|w| w.character.is_ascii_digit())
        .or(told.first())
        .cloned();
    RuleBound {
        rules: best.len(),
        witness,
    }
}

/// Whether `rules` give `source` the name `target` (keeping it counts when unmatched keys
/// are kept).
fn reproduces(rules: &Rules, source: &str, target: &str, unmatched: Unmatched) -> bool {
    match rules.rename(source) {
        Some(new) => new == target,
        None => unmatched == Unmatched::Kept && source == target,
    }
}

/// One induction: templates of every rename that needs a rule, ordered, then exact rules in
/// front for the renames they get wrong.
fn induce_with(
    renames: &[(&str, &str)],
    unmatched: Unmatched,
    how: Generalize,
    specific_first: bool,
) -> crate::Result<Vec<Rule>> {
    let needed: Vec<(&str, &str)> = renames
        .iter()
        .filter(|(s, t)| unmatched == Unmatched::Dropped || s != t)
        .copied()
        .collect();
    let templates: Vec<(String, String)> = match how {
        Generalize::Forms => form_templates(&needed, false),
        Generalize::FormsLeaf => form_templates(&needed, true),
        _ => needed.iter().map(|(s, t)| template(s, t, how)).collect(),
    };
    let mut order: Vec<(String, String)> = vec![];
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for key in templates {
        let n = count.entry(key.clone()).or_insert(0);
        if *n == 0 {
            order.push(key);
        }
        *n += 1;
    }
    // Ties in first-seen order, for a stable file.
    if specific_first {
        order.sort_by_key(|k| std::cmp::Reverse(literal_len(&k.0)));
    } else {
        order.sort_by_key(|k| std::cmp::Reverse(count[k]));
    }
    let mut rules: Vec<Rule> = order
        .into_iter()
        .map(|(pattern, replacement)| Rule {
            pattern,
            replacement,
        })
        .collect();
    let general = Rules::new(rules.clone(), Map::new())?;
    let exact: Vec<Rule> = renames
        .iter()
        .filter(|(s, t)| !reproduces(&general, s, t, unmatched))
        .map(|(s, t)| Rule {
            pattern: format!("^{}$", regex::escape(s)),
            replacement: t.replace('\\', r"\\"),
        })
        .collect();
    if !exact.is_empty() {
        rules.splice(0..0, exact);
    }
    Ok(rules)
}

/// A name cut at its digit runs: the text around them (one more than the runs) and the
/// runs (`layer1.0.conv1` → `["layer", ".", ".conv", ""]`, `["1", "0", "1"]`).
fn digit_runs(name: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut texts, mut runs) = (vec![], vec![]);
    let bytes = name.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let j = (i..bytes.len())
                .find(|&j| !bytes[j].is_ascii_digit())
                .unwrap_or(bytes.len());
            texts.push(&name[start..i]);
            runs.push(&name[i..j]);
            start = j;
            i = j;
        } else {
            i += 1;
        }
    }
    texts.push(&name[start..]);
    (texts, runs)
}

/// A form of rename: the source's and target's text around their numbers, and whether
/// the shared ending is a group.
type Form<'c, 'a> = (&'c [&'a str], &'c [&'a str], bool);

/// One template per rename ([`Generalize::Forms`]): renames are grouped by form (source
/// and target with digit runs blanked, the shared ending cut off); within a form, target
/// number `j` is group of source number `i` when the two are equal in every rename of the
/// form; renames of a form that differ in a literal number get their own rule.
fn form_templates<'a>(renames: &[(&'a str, &'a str)], leaf_only: bool) -> Vec<(String, String)> {
    struct Cut<'a> {
        source: (Vec<&'a str>, Vec<&'a str>),
        target: (Vec<&'a str>, Vec<&'a str>),
        tail: bool,
    }
    let cuts: Vec<Cut> = renames
        .iter()
        .map(|(s, t)| {
            let sc: Vec<&str> = s.split('.').collect();
            let tc: Vec<&str> = t.split('.').collect();
            let mut k = sc
                .iter()
                .rev()
                .zip(tc.iter().rev())
                .take_while(|(a, b)| a == b)
                .count()
                .min(sc.len() - 1);
            if leaf_only {
                k = k.min(1);
            }
            // The heads as slices of the names (the tail is dropped with its dot).
            let head = |n: &'a str, comps: usize| -> &'a str {
                if k == 0 {
                    return n;
                }
                let cut: usize = n.split('.').take(comps).map(|c| c.len() + 1).sum();
                &n[..cut.saturating_sub(1)]
            };
            Cut {
                source: digit_runs(head(s, sc.len() - k)),
                target: digit_runs(head(t, tc.len() - k)),
                tail: k > 0,
            }
        })
        .collect();
    let mut forms: HashMap<Form, Vec<usize>> = HashMap::new();
    for (n, c) in cuts.iter().enumerate() {
        forms
            .entry((&c.source.0, &c.target.0, c.tail))
            .or_default()
            .push(n);
    }
    let mut out = vec![(String::new(), String::new()); renames.len()];
    for members in forms.values() {
        let first = &cuts[members[0]];
        let (ns, nt) = (first.source.1.len(), first.target.1.len());
        // Target number -> the source number it equals throughout the form, nearest the
        // end first (inner indices repeat).
        let mut link: Vec<Option<usize>> = vec![None; nt];
        let mut used = vec![false; ns];
        for j in (0..nt).rev() {
            link[j] = (0..ns).rev().find(|&i| {
                !used[i]
                    && members
                        .iter()
                        .all(|&m| cuts[m].source.1[i] == cuts[m].target.1[j])
            });
            if let Some(i) = link[j] {
                used[i] = true;
            }
        }
        let mut group_of = vec![None; ns];
        let mut next = 0;
        for (i, g) in group_of.iter_mut().enumerate() {
            if used[i] {
                next += 1;
                *g = Some(next);
            }
        }
        for &m in members {
            let c = &cuts[m];
            let mut pattern = String::from("^");
            for (i, text) in c.source.0.iter().enumerate() {
                pattern.push_str(&regex::escape(text));
                if let Some(run) = c.source.1.get(i) {
                    match group_of[i] {
                        Some(_) => pattern.push_str(r"(\d+)"),
                        None => pattern.push_str(run),
                    }
                }
            }
            let mut replacement = String::new();
            for (j, text) in c.target.0.iter().enumerate() {
                replacement.push_str(&text.replace('\\', r"\\"));
                if let Some(run) = c.target.1.get(j) {
                    match link[j].and_then(|i| group_of[i]) {
                        Some(g) => replacement.push_str(&format!(r"\{g}")),
                        None => replacement.push_str(run),
                    }
                }
            }
            if c.tail {
                pattern.push_str(if leaf_only { r"\.([^.]+)" } else { r"\.(.+)" });
                if !replacement.is_empty() {
                    replacement.push('.');
                }
                replacement.push_str(&format!(r"\{}", next + 1));
            }
            pattern.push('$');
            out[m] = (pattern, replacement);
        }
    }
    out
}

/// Characters of a pattern outside its groups: how specific it is.
fn literal_len(pattern: &str) -> usize {
    let groups = [r"(\d+)", r"([^.]+)", r"(.+)"];
    let mut rest = pattern.to_string();
    for g in groups {
        rest = rest.replace(g, "");
    }
    rest.len()
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

/// The template of one rename: (anchored pattern, replacement). With indices
/// ([`Generalize::Indices`]), all-digit components of the target reuse equal ones of the
/// source, matched from the right (the indices nearest the leaf repeat; `layer1.0` →
/// `stages.0.blocks.0` keeps the stage literal), and a leaf name both share (`weight`,
/// `running_mean`) is a group. With a tail, the components both names end with (at least
/// one, never the whole source) become one group `(.+)`: `module.layer1.0.bn1.weight` →
/// `layer1.0.bn1.weight` is `^module\.(.+)$` → `\1`. Other components stay literal.
fn template(source: &str, target: &str, how: Generalize) -> (String, String) {
    let is_digits = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit());
    let sc: Vec<&str> = source.split('.').collect();
    let tc: Vec<&str> = target.split('.').collect();
    let tail = if how == Generalize::Indices {
        0
    } else {
        sc.iter()
            .rev()
            .zip(tc.iter().rev())
            .take_while(|(a, b)| a == b)
            .count()
            .min(sc.len() - 1)
    };
    let (sh, th) = (sc.len() - tail, tc.len() - tail);
    // Target component -> source component it repeats.
    let mut link: Vec<Option<usize>> = vec![None; th];
    if how != Generalize::Tail {
        let mut limit = sh;
        for j in (0..th).rev() {
            if !is_digits(tc[j]) {
                continue;
            }
            if let Some(i) = (0..limit).rev().find(|&i| sc[i] == tc[j]) {
                link[j] = Some(i);
                limit = i;
            }
        }
    }
    if tail == 0 && how != Generalize::Tail {
        let (ls, lt) = (sh - 1, th - 1);
        if sc[ls] == tc[lt] && !is_digits(sc[ls]) && link[lt].is_none() && (ls > 0 || lt > 0) {
            link[lt] = Some(ls);
        }
    }
    let mut group_of: Vec<Option<usize>> = vec![None; sh];
    let mut next = 0;
    for (i, group) in group_of.iter_mut().enumerate() {
        if link.contains(&Some(i)) {
            next += 1;
            *group = Some(next);
        }
    }
    let mut pattern = String::from("^");
    for (i, c) in sc[..sh].iter().enumerate() {
        if i > 0 {
            pattern.push_str(r"\.");
        }
        match group_of[i] {
            Some(_) if is_digits(c) => pattern.push_str(r"(\d+)"),
            Some(_) => pattern.push_str(r"([^.]+)"),
            None => pattern.push_str(&regex::escape(c)),
        }
    }
    let mut replacement: Vec<String> = tc[..th]
        .iter()
        .enumerate()
        .map(|(j, c)| match link[j].and_then(|i| group_of[i]) {
            Some(g) => format!(r"\{g}"),
            None => c.replace('\\', r"\\"),
        })
        .collect();
    if tail > 0 {
        pattern.push_str(r"\.(.+)");
        replacement.push(format!(r"\{}", next + 1));
    }
    pattern.push('$');
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
        let rules = induce_rules(&m, Unmatched::Dropped).unwrap();
        for (s, t) in &pairs {
            assert_eq!(rules.rename(s).as_deref(), Some(t.as_str()), "{s}");
        }
        assert!(rules.rules().len() <= 8, "{:?}", rules.rules());
    }

    fn reproduced(rules: &Rules, pairs: &[(String, String)], unmatched: Unmatched) {
        for (s, t) in pairs {
            assert!(
                reproduces(rules, s, t, unmatched),
                "{s} -> {:?}, not {t}: {:?}",
                rules.rename(s),
                rules.rules()
            );
        }
    }

    /// Stages renumbered (`layer1` → `stages.0`), modules renamed inside each block, a
    /// wrapper prefix, an index inside a name, names that stay.
    #[test]
    fn renumbered_containers_get_one_rule_each_with_inner_indices_as_groups() {
        let mut pairs = vec![];
        for stage in 1..=4 {
            for block in 0..4 {
                for (from, to) in [("conv1", "conv_a"), ("bn1", "norm_a")] {
                    for leaf in ["weight", "bias"] {
                        pairs.push((
                            format!("layer{stage}.{block}.{from}.{leaf}"),
                            format!("stages.{}.blocks.{block}.{to}.{leaf}", stage - 1),
                        ));
                    }
                }
            }
        }
        let rules = induce_rules(&mapping(&pairs), Unmatched::Dropped).unwrap();
        reproduced(&rules, &pairs, Unmatched::Dropped);
        // One rule per (stage, module): the target's stage number is in no source name.
        assert_eq!(rules.rules().len(), 8, "{:?}", rules.rules());
    }

    #[test]
    fn a_prefix_an_index_inside_a_name_and_kept_names_need_few_rules() {
        let mut prefixed = vec![];
        for l in 0..12 {
            for leaf in [
                "attn.qkv.weight",
                "attn.qkv.bias",
                "mlp.0.weight",
                "ln_1.weight",
            ] {
                prefixed.push((format!("module.h.{l}.{leaf}"), format!("h.{l}.{leaf}")));
            }
        }
        let rules = induce_rules(&mapping(&prefixed), Unmatched::Dropped).unwrap();
        reproduced(&rules, &prefixed, Unmatched::Dropped);
        assert_eq!(rules.rules().len(), 1, "{:?}", rules.rules());

        let inside: Vec<(String, String)> = (0..12)
            .flat_map(|l| {
                ["weight", "bias"].map(|leaf| {
                    (
                        format!("encoder.layers.encoder_layer_{l}.ln_1.{leaf}"),
                        format!("blocks.{l}.norm1.{leaf}"),
                    )
                })
            })
            .collect();
        let rules = induce_rules(&mapping(&inside), Unmatched::Dropped).unwrap();
        reproduced(&rules, &inside, Unmatched::Dropped);
        assert_eq!(rules.rules().len(), 1, "{:?}", rules.rules());

        // Names that stay need no rule where unmatched keys keep their names (and no rule
        // may rename them), one where they are dropped.
        let mut mixed: Vec<(String, String)> = (0..10)
            .map(|l| (format!("h.{l}.w"), format!("h.{l}.w")))
            .collect();
        mixed.push(("fc.weight".into(), "head.fc.weight".into()));
        let kept = induce_rules(&mapping(&mixed), Unmatched::Kept).unwrap();
        reproduced(&kept, &mixed, Unmatched::Kept);
        assert_eq!(kept.rules().len(), 1, "{:?}", kept.rules());
        let dropped = induce_rules(&mapping(&mixed), Unmatched::Dropped).unwrap();
        reproduced(&dropped, &mixed, Unmatched::Dropped);
        assert_eq!(dropped.rules().len(), 2, "{:?}", dropped.rules());
    }

    /// Stages renumbered from 1 to 0: the '2' of `stages.2` is in no source name of stage
    /// 3, so the rule that makes it writes a '2' into every name it makes; stage 1's
    /// target has none. With four modules renamed per stage as well, 4 × 2 rules at least.
    #[test]
    fn renumbered_stages_prove_a_minimum_of_rules() {
        let mut pairs = vec![];
        for stage in 1..=4 {
            for (from, to) in [("conv", "conv_x"), ("bn", "norm_y")] {
                pairs.push((
                    format!("layer{stage}.0.{from}.weight"),
                    format!("stages.{}.blocks.0.{to}.weight", stage - 1),
                ));
            }
        }
        let m = mapping(&pairs);
        let bound = rule_lower_bound(&m, Unmatched::Kept);
        let rules = induce_rules(&m, Unmatched::Kept).unwrap();
        reproduced(&rules, &pairs, Unmatched::Kept);
        assert_eq!(bound.rules, 8, "{bound:?}");
        assert!(rules.rules().len() >= bound.rules);
        let w = bound.witness.expect("a witness");
        let ((s1, t1), (_, t2), ch) = (w.needs, w.lacks, w.character);
        assert!(
            t1.contains(ch) && !s1.contains(ch) && !t2.contains(ch),
            "{ch}"
        );

        // Indices the target copies prove nothing: one rule may do.
        let copied = mapping(&[
            ("a.1.w".into(), "b.1.w".into()),
            ("a.2.w".into(), "b.2.w".into()),
        ]);
        assert_eq!(rule_lower_bound(&copied, Unmatched::Kept).rules, 1);
        assert_eq!(rule_lower_bound(&mapping(&[]), Unmatched::Kept).rules, 0);
    }

    #[test]
    fn the_python_module_carries_rules_as_data() {
        let m = mapping(&[("a.0.w".into(), "b.0.w".into())]);
        let text = python_module(
            &induce_rules(&m, Unmatched::Dropped).unwrap(),
            &[],
            "m.json",
        );
        assert!(text.contains(r#"(\\d+)"#), "{text}");
        assert!(text.contains("def convert(state_dict"));
    }
}
