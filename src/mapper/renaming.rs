//! One renaming across repeated blocks.
//!
//! Repeated blocks (layers, stages, experts) map with the same relative renaming: inside
//! module pairs whose paths read alike once indices are set aside (`layers.#` ↔
//! `blocks.#`), a path relative to the source module goes to one path relative to the
//! target module (`inp` → `alpha`, `attention.output.LayerNorm` → `norm1`). The rules are
//! induced from the instances decided by other evidence (unique shapes, names, structure,
//! execution order) and then decide the instances where that evidence is missing; a
//! decision by file order that contradicts a rule is refused.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A relative renaming followed by repeated blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRule {
    /// The source modules it holds in, indices written `#` (`layers.#`; empty: the root).
    pub source_block: String,
    /// Their target counterparts, indices written `#` (`blocks.#`).
    pub target_block: String,
    /// The path inside the source module (`attention.output.LayerNorm`).
    pub source: String,
    /// The path inside the target module (`norm1`).
    pub target: String,
    /// How many block pairs decided by other evidence follow it.
    pub support: usize,
}

/// A path with every run of digits written `#`: the pattern repeated blocks share.
pub(crate) fn generalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for c in path.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The path of `path` inside the module `root` (`root` empty: the path itself).
pub(crate) fn relative<'a>(path: &'a str, root: &str) -> &'a str {
    if root.is_empty() {
        return path;
    }
    path.strip_prefix(root)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(path)
}

/// Block patterns (source, target) of a pair of module roots.
pub(crate) type BlockKey = (String, String);

/// The renamings seen so far: per pair of block patterns, per source path, the target
/// paths and how often each was decided.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleBook {
    seen: HashMap<BlockKey, HashMap<String, HashMap<String, usize>>>,
}

impl RuleBook {
    /// The key of a level whose roots are the modules `s_root` and `t_root`.
    pub fn key(s_root: &str, t_root: &str) -> BlockKey {
        (generalize(s_root), generalize(t_root))
    }

    /// Records one decided pair (paths relative to the level's roots).
    pub fn record(&mut self, key: &BlockKey, source: &str, target: &str) {
        *self
            .seen
            .entry(key.clone())
            .or_default()
            .entry(source.to_string())
            .or_default()
            .entry(target.to_string())
            .or_default() += 1;
    }

    /// The one target path the blocks of `key` rename `source` to, with its support;
    /// `None` when never seen or when instances disagree.
    pub fn lookup(&self, key: &BlockKey, source: &str) -> Option<(&str, usize)> {
        let targets = self.seen.get(key)?.get(source)?;
        match targets.iter().next() {
            Some((t, &n)) if targets.len() == 1 => Some((t.as_str(), n)),
            _ => None,
        }
    }

    /// The rules repeated blocks follow (one target path, seen in two blocks or more),
    /// sorted.
    pub fn rules(&self) -> Vec<BlockRule> {
        let mut out: Vec<BlockRule> = self
            .seen
            .iter()
            .flat_map(|((sb, tb), paths)| {
                paths.iter().filter_map(move |(source, targets)| {
                    let (target, &support) = targets.iter().next()?;
                    (targets.len() == 1 && support >= 2).then(|| BlockRule {
                        source_block: sb.clone(),
                        target_block: tb.clone(),
                        source: source.clone(),
                        target: target.clone(),
                        support,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.source_block, &a.target_block, &a.source).cmp(&(
                &b.source_block,
                &b.target_block,
                &b.source,
            ))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_lookups() {
        assert_eq!(
            generalize("layers.12.mlp.experts.3"),
            "layers.#.mlp.experts.#"
        );
        assert_eq!(generalize("s1.b2"), "s#.b#");
        assert_eq!(relative("layers.3.attn.q", "layers.3"), "attn.q");
        assert_eq!(relative("x", ""), "x");
        let mut book = RuleBook::default();
        let key = RuleBook::key("layers.0", "blocks.0");
        assert_eq!(key, RuleBook::key("layers.7", "blocks.7"));
        book.record(&key, "inp", "alpha");
        book.record(&RuleBook::key("layers.1", "blocks.1"), "inp", "alpha");
        assert_eq!(book.lookup(&key, "inp"), Some(("alpha", 2)));
        assert_eq!(book.rules().len(), 1);
        book.record(&key, "inp", "beta");
        assert_eq!(book.lookup(&key, "inp"), None, "instances disagree");
        assert!(book.rules().is_empty());
    }
}
