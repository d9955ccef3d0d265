//! Long lists of names that differ only in their indices (`layers.0` … `layers.31`,
//! `experts.0` … `experts.7`) collapsed into patterns, for every renderer:
//! `model.layers.{0..3}.block_sparse_moe.experts.{0..7}.w1.weight` stands for 32 names.
//!
//! The notation, lossless by construction:
//! - an index is a decimal number that is a whole dotted component (`.7.`, or `.7` at the
//!   end of a word), written without leading zeros;
//! - `{0..3}` is every integer from 0 to 3 inclusive, `{0,2,5}` those three,
//!   `{0..3,6,9..11}` both kinds together;
//! - the braces of one row vary independently (the row stands for every combination);
//! - `{=N}` repeats the N-th brace of the row (counted from 1 across all fields): the same
//!   index, not another one (the layer a tensor's reason names is its own layer).
//!
//! A pattern is only made when the rows it stands for are exactly every combination of
//! its braces; otherwise the rows are split (by their first varying index) until that
//! holds. Rows are grouped in order of first appearance, so the output is deterministic.

use std::collections::{BTreeSet, HashMap};

/// One collapsed row: its fields with braces, and which input rows it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collapsed {
    /// The fields, in the notation of this module.
    pub fields: Vec<String>,
    /// Indices of the input rows it stands for, in input order (at least one).
    pub members: Vec<usize>,
}

impl Collapsed {
    /// How many input rows it stands for.
    pub fn count(&self) -> usize {
        self.members.len()
    }
}

/// A field cut at its indices: literal text around them, and their values.
struct Cut {
    /// Text around the indices, one more than `values` (joined by the skeleton marker).
    skeleton: String,
    values: Vec<u64>,
}

/// An input row's position and the values of its indices.
type Member = (usize, Vec<u64>);

/// Marks an index's place in a skeleton (not a character names contain).
const SLOT: char = '\u{0}';

fn cut(field: &str) -> Cut {
    let bytes = field.as_bytes();
    let mut skeleton = String::with_capacity(field.len());
    let mut values = Vec::new();
    // Whether the last digit run was a dotted component (`units.0.1`: the `1` follows one),
    // as opposed to the integer part of a number (`scored 0.929`).
    let mut last_run_dotted = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            let after_dot = i >= 1 && bytes[i - 1] == b'.';
            let dotted = after_dot && (i < 2 || !bytes[i - 2].is_ascii_digit() || last_run_dotted);
            // A whole component: followed by '.', or by the end of a word.
            let whole =
                end == bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
            let digits = &field[i..end];
            let canonical = digits == "0" || !digits.starts_with('0');
            last_run_dotted = dotted;
            if dotted && whole && canonical && digits.len() <= 18 {
                values.push(digits.parse().expect("checked decimal digits"));
                skeleton.push(SLOT);
            } else {
                skeleton.push_str(digits);
            }
            i = end;
            continue;
        }
        let ch = field[i..].chars().next().expect("in bounds");
        skeleton.push(ch);
        i += ch.len_utf8();
    }
    Cut { skeleton, values }
}

/// `{0..3}`, `{0,2,5}`, `{0..3,6,9..11}`: runs of 3 or more as ranges.
fn braces(values: &BTreeSet<u64>) -> String {
    let v: Vec<u64> = values.iter().copied().collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}..{}", v[i], v[j]));
        } else {
            parts.extend(v[i..=j].iter().map(u64::to_string));
        }
        i = j + 1;
    }
    format!("{{{}}}", parts.join(","))
}

/// Collapses `rows` (each a list of fields, e.g. a name and a reason) into patterns.
/// Rows collapse together when their fields are equal but for indices, and only into a
/// pattern that stands for exactly them (see the module's notation). A row alone stays
/// as it is.
pub fn collapse(rows: &[Vec<String>]) -> Vec<Collapsed> {
    // Group by skeleton, in order of first appearance.
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut groups: HashMap<Vec<String>, Vec<Member>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let cuts: Vec<Cut> = row.iter().map(|f| cut(f)).collect();
        let key: Vec<String> = cuts.iter().map(|c| c.skeleton.clone()).collect();
        let values: Vec<u64> = cuts.into_iter().flat_map(|c| c.values).collect();
        let entry = groups.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push((i, values));
    }
    let mut out = Vec::new();
    for key in order {
        let members = groups.remove(&key).expect("grouped above");
        split_into(&key, members, rows, &mut out);
    }
    out.sort_by_key(|c| c.members[0]);
    out
}

/// Renders `members` (rows of one skeleton) as patterns, splitting by the first varying
/// slot until each part is exactly every combination of its braces.
fn split_into(
    skeleton: &[String],
    members: Vec<Member>,
    rows: &[Vec<String>],
    out: &mut Vec<Collapsed>,
) {
    if members.len() == 1 {
        out.push(Collapsed {
            fields: rows[members[0].0].clone(),
            members: vec![members[0].0],
        });
        return;
    }
    let slots = members[0].1.len();
    let column = |s: usize| -> Vec<u64> { members.iter().map(|m| m.1[s]).collect() };
    // Slots with more than one value; slots with equal columns are one variable.
    let mut variables: Vec<Vec<usize>> = Vec::new();
    let mut columns: Vec<Vec<u64>> = Vec::new();
    for s in 0..slots {
        let col = column(s);
        if col.iter().all(|&v| v == col[0]) {
            continue;
        }
        match columns.iter().position(|c| *c == col) {
            Some(k) => variables[k].push(s),
            None => {
                columns.push(col);
                variables.push(vec![s]);
            }
        }
    }
    let sets: Vec<BTreeSet<u64>> = columns
        .iter()
        .map(|c| c.iter().copied().collect())
        .collect();
    let distinct: BTreeSet<Vec<u64>> = members
        .iter()
        .map(|m| variables.iter().map(|v| m.1[v[0]]).collect())
        .collect();
    let combinations = sets
        .iter()
        .try_fold(1usize, |acc, s| acc.checked_mul(s.len()));
    let exact = distinct.len() == members.len() && combinations == Some(members.len());
    if !exact {
        if variables.is_empty() {
            // Equal rows (a list that repeats a name): each stays itself.
            for (i, _) in members {
                out.push(Collapsed {
                    fields: rows[i].clone(),
                    members: vec![i],
                });
            }
            return;
        }
        let slot = variables[0][0];
        let mut parts: Vec<(u64, Vec<Member>)> = Vec::new();
        for m in members {
            match parts.iter_mut().find(|p| p.0 == m.1[slot]) {
                Some(p) => p.1.push(m),
                None => parts.push((m.1[slot], vec![m])),
            }
        }
        for (_, part) in parts {
            split_into(skeleton, part, rows, out);
        }
        return;
    }
    // Render: each slot's text is its fixed value, its variable's braces (first
    // occurrence), or `{=N}` (a later occurrence of the N-th brace).
    let mut slot_text: Vec<String> = (0..slots).map(|s| members[0].1[s].to_string()).collect();
    let mut firsts: Vec<(usize, usize)> = variables
        .iter()
        .enumerate()
        .map(|(k, v)| (v[0], k))
        .collect();
    firsts.sort();
    let mut brace_number = vec![0; variables.len()];
    for (n, &(_, k)) in firsts.iter().enumerate() {
        brace_number[k] = n + 1;
    }
    let mut braces_seen = 0;
    let mut slot_var: Vec<Option<usize>> = vec![None; slots];
    for (k, v) in variables.iter().enumerate() {
        for &s in v {
            slot_var[s] = Some(k);
        }
    }
    let mut shown = vec![false; variables.len()];
    for s in 0..slots {
        if let Some(k) = slot_var[s] {
            if shown[k] {
                slot_text[s] = format!("{{={}}}", brace_number[k]);
            } else {
                shown[k] = true;
                braces_seen += 1;
                debug_assert_eq!(braces_seen, brace_number[k]);
                slot_text[s] = braces(&sets[k]);
            }
        }
    }
    let mut texts = slot_text.into_iter();
    let fields = skeleton
        .iter()
        .map(|sk| {
            let mut f = String::with_capacity(sk.len());
            for ch in sk.chars() {
                if ch == SLOT {
                    f.push_str(&texts.next().expect("one text per slot"));
                } else {
                    f.push(ch);
                }
            }
            f
        })
        .collect();
    let mut ids: Vec<usize> = members.into_iter().map(|m| m.0).collect();
    ids.sort_unstable();
    out.push(Collapsed {
        fields,
        members: ids,
    });
}

/// Expands one pattern field back into the names it stands for, given the braces of its
/// row so far (`{=N}` refers to them); the inverse of [`collapse`], for tests and readers.
#[cfg(test)]
fn expand(fields: &[String]) -> BTreeSet<Vec<String>> {
    // Parse every brace of the row, in order.
    enum Piece {
        Text(String),
        Brace(Vec<u64>),
        Same(usize),
    }
    let parse = |f: &str| -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut rest = f;
        while let Some(open) = rest.find('{') {
            pieces.push(Piece::Text(rest[..open].to_string()));
            let close = open + rest[open..].find('}').unwrap();
            let inner = &rest[open + 1..close];
            if let Some(n) = inner.strip_prefix('=') {
                pieces.push(Piece::Same(n.parse().unwrap()));
            } else {
                let mut values = Vec::new();
                for part in inner.split(',') {
                    match part.split_once("..") {
                        Some((a, b)) => {
                            values.extend(a.parse::<u64>().unwrap()..=b.parse().unwrap())
                        }
                        None => values.push(part.parse().unwrap()),
                    }
                }
                pieces.push(Piece::Brace(values));
            }
            rest = &rest[close + 1..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        pieces
    };
    let parsed: Vec<Vec<Piece>> = fields.iter().map(|f| parse(f)).collect();
    let domains: Vec<Vec<u64>> = parsed
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Piece::Brace(v) => Some(v.clone()),
            _ => None,
        })
        .collect();
    let mut combos: Vec<Vec<u64>> = vec![vec![]];
    for d in &domains {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                d.iter().map(move |&v| {
                    let mut c = c.clone();
                    c.push(v);
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|combo| {
            let mut k = 0;
            parsed
                .iter()
                .map(|pieces| {
                    let mut s = String::new();
                    for p in pieces {
                        match p {
                            Piece::Text(t) => s.push_str(t),
                            Piece::Brace(_) => {
                                s.push_str(&combo[k].to_string());
                                k += 1;
                            }
                            Piece::Same(n) => s.push_str(&combo[n - 1].to_string()),
                        }
                    }
                    s
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(names: &[String]) -> Vec<Vec<String>> {
        names.iter().map(|n| vec![n.clone()]).collect()
    }

    fn round_trip(input: &[Vec<String>]) -> Vec<Collapsed> {
        let out = collapse(input);
        let mut covered: Vec<usize> = out.iter().flat_map(|c| c.members.clone()).collect();
        covered.sort_unstable();
        assert_eq!(
            covered,
            (0..input.len()).collect::<Vec<_>>(),
            "every row once"
        );
        for c in &out {
            let expanded = expand(&c.fields);
            let members: BTreeSet<Vec<String>> =
                c.members.iter().map(|&i| input[i].clone()).collect();
            assert_eq!(expanded, members, "{:?} expands to its rows", c.fields);
        }
        out
    }

    #[test]
    fn layers_times_experts_collapse_into_one_pattern() {
        let names: Vec<String> = (0..4)
            .flat_map(|l| {
                (0..8).map(move |e| format!("model.layers.{l}.moe.experts.{e}.w1.weight"))
            })
            .collect();
        let out = round_trip(&rows(&names));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].fields[0],
            "model.layers.{0..3}.moe.experts.{0..7}.w1.weight"
        );
        assert_eq!(out[0].count(), 32);
    }

    #[test]
    fn gaps_are_listed_and_missing_combinations_split() {
        let names: Vec<String> = [0u32, 2, 5]
            .iter()
            .map(|i| format!("blocks.{i}.attn.qkv.weight"))
            .collect();
        assert_eq!(
            round_trip(&rows(&names))[0].fields[0],
            "blocks.{0,2,5}.attn.qkv.weight"
        );
        // layer 1 lacks expert 2: not a product, so one line per layer.
        let names: Vec<String> = (0..2)
            .flat_map(|l| (0..4).map(move |e| (l, e)))
            .filter(|&(l, e)| !(l == 1 && e == 2))
            .map(|(l, e)| format!("layers.{l}.experts.{e}.w"))
            .collect();
        let out = round_trip(&rows(&names));
        let fields: Vec<&str> = out.iter().map(|c| c.fields[0].as_str()).collect();
        assert_eq!(
            fields,
            ["layers.0.experts.{0..3}.w", "layers.1.experts.{0,1,3}.w"]
        );
    }

    #[test]
    fn an_index_repeated_in_another_field_is_tied_not_independent() {
        let input: Vec<Vec<String>> = (0..3)
            .flat_map(|l| {
                (0..2).map(move |e| {
                    vec![
                        format!("layers.{l}.experts.{e}.w1 [48,32]"),
                        format!("stacked into layers.{l}.gate_up_proj (score 0.929)"),
                    ]
                })
            })
            .collect();
        let out = round_trip(&input);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].fields[0], "layers.{0..2}.experts.{0,1}.w1 [48,32]");
        assert_eq!(
            out[0].fields[1],
            "stacked into layers.{=1}.gate_up_proj (score 0.929)"
        );
    }

    #[test]
    fn different_words_numbers_and_leading_zeros_stay_apart() {
        let input = rows(&[
            "a.0.weight".into(),
            "a.1.bias".into(),
            "a.01.weight".into(),
            "v1.weight".into(),
            "v2.weight".into(),
            "a.2.weight".into(),
            "a.1.weight".into(),
        ]);
        let out = round_trip(&input);
        let fields: Vec<&str> = out.iter().map(|c| c.fields[0].as_str()).collect();
        // Grouped where their first member was; leading zeros and `v1` are not indices.
        assert_eq!(
            fields,
            [
                "a.{0..2}.weight",
                "a.1.bias",
                "a.01.weight",
                "v1.weight",
                "v2.weight"
            ]
        );
    }

    #[test]
    fn nested_sequential_indices_are_indices_and_decimals_are_not() {
        let c = cut("stages.0.units.1.0.conv scored 0.929 v1.2.3");
        assert_eq!(c.values, [0, 1, 0]);
        let input = rows(&[
            "units.0.0.conv".into(),
            "units.0.1.conv".into(),
            "units.1.0.conv".into(),
            "units.1.1.conv".into(),
        ]);
        assert_eq!(round_trip(&input)[0].fields[0], "units.{0,1}.{0,1}.conv");
    }

    #[test]
    fn deterministic_and_repeated_rows_kept() {
        let input = rows(&["x.0".into(), "x.0".into(), "x.1".into()]);
        let out = round_trip(&input);
        assert_eq!(out, collapse(&input));
        assert_eq!(out.iter().map(Collapsed::count).sum::<usize>(), 3);
    }
}
