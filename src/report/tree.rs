//! `tree`: module hierarchies as text, one model alone or two side by side, each module
//! with its tensors as badges (`W[64,3,7,7]` weight, `B[64]` bias, `buf:running_mean[64]`
//! buffer, `name[shape]` other parameters), and with a mapping, a mark for how much of
//! each module is matched and the module its tensors went to on the other side.

use crate::mapper::MappingResult;
use crate::report::terminal::{shape_text, Style};
use crate::spec::{ModelSpec, ModuleNode, TensorInfo, TensorKind};
use std::collections::HashMap;
use std::fmt::Write;

/// Leaf names that are buffers in PyTorch's own modules; used to badge buffers of
/// checkpoints, whose files do not say which tensors are buffers.
pub const KNOWN_BUFFER_LEAVES: &[&str] = &["running_mean", "running_var", "num_batches_tracked"];

/// Mark of a module (or tensor) whose tensors are all matched.
pub const MARK_MATCHED: &str = "✓";
/// Mark of a module some of whose tensors are matched.
pub const MARK_PARTIAL: &str = "◐";
/// Mark of a module (or tensor) with no matched tensor.
pub const MARK_UNMATCHED: &str = "✗";
/// Separator between the two trees.
const COLUMN_SEPARATOR: &str = " │ ";

/// One matched pair: indices into the source and target specs' `tensors`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreePair {
    /// Index of the source tensor.
    pub source: usize,
    /// Index of the target tensor.
    pub target: usize,
    /// The pair's score, when known (a mapping file has none).
    pub score: Option<f64>,
}

/// Options of the tree renderers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeOptions {
    /// Deepest module level shown (`None`: all); deeper modules are folded into a count
    /// on their ancestor.
    pub depth: Option<usize>,
    /// ANSI colors.
    pub color: bool,
}

/// The pairs of a mapping result, as indices (pairs whose names are not in the specs
/// are skipped: the result was computed from these specs, so there are none).
pub fn pairs_from_result(
    source: &ModelSpec,
    target: &ModelSpec,
    result: &MappingResult,
) -> Vec<TreePair> {
    let s_index: HashMap<&str, usize> = source
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let t_index: HashMap<&str, usize> = target
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let by_original: HashMap<&str, usize> = source
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.original_name.as_str(), i))
        .collect();
    let t_by_original: HashMap<&str, usize> = target
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.original_name.as_str(), i))
        .collect();
    let mut pairs: Vec<TreePair> = result
        .mappings
        .iter()
        .filter_map(|m| {
            Some(TreePair {
                source: *s_index.get(m.source.as_str())?,
                target: *t_index.get(m.target.as_str())?,
                score: Some(m.score),
            })
        })
        .collect();
    // Conversions name tensors as written in their files.
    for c in &result.conversions {
        for s in c.sources.iter().filter_map(|s| by_original.get(s.as_str())) {
            for t in c
                .targets
                .iter()
                .filter_map(|t| t_by_original.get(t.as_str()))
            {
                pairs.push(TreePair {
                    source: *s,
                    target: *t,
                    score: c.confidence,
                });
            }
        }
    }
    pairs
}

/// The pairs of a mapping file, checked against both models (see
/// [`crate::mapping::Mapping::resolve`]); `context` names the file in errors. A
/// conversion pairs each of its sources with each of its targets it feeds (all of them
/// for a gather or a scatter).
pub fn pairs_from_mapping(
    source: &ModelSpec,
    target: &ModelSpec,
    mapping: &crate::mapping::Mapping,
    context: &str,
) -> crate::Result<Vec<TreePair>> {
    let resolved = mapping.resolve(source, Some(target), context)?;
    let t_index = target.written_index();
    let mut pairs: Vec<TreePair> = resolved
        .entries
        .iter()
        .filter_map(|e| {
            Some(TreePair {
                source: e.source_index,
                target: *t_index.get(e.target.as_str())?,
                score: None,
            })
        })
        .collect();
    for c in &resolved.conversions {
        for &s in &c.sources {
            for t in c
                .conversion
                .targets
                .iter()
                .filter_map(|t| t_index.get(t.as_str()))
            {
                pairs.push(TreePair {
                    source: s,
                    target: *t,
                    score: c.conversion.confidence,
                });
            }
        }
    }
    Ok(pairs)
}

/// Whether a tensor is a buffer: known from the model, or by its leaf name when the
/// file does not say.
pub fn is_buffer(t: &TensorInfo) -> bool {
    match t.kind {
        TensorKind::Buffer => true,
        TensorKind::Parameter => false,
        TensorKind::Unknown => KNOWN_BUFFER_LEAVES.contains(&t.leaf.as_str()),
    }
}

/// A tensor's badge: `W[16,3,3,3]`, `B[16]`, `buf:running_mean[16]`, `cls_token[1,1,8]`.
pub fn badge(t: &TensorInfo) -> String {
    if is_buffer(t) {
        format!("buf:{}{}", t.leaf, shape_text(&t.shape))
    } else {
        match t.leaf.as_str() {
            "weight" => format!("W{}", shape_text(&t.shape)),
            "bias" => format!("B{}", shape_text(&t.shape)),
            leaf => format!("{leaf}{}", shape_text(&t.shape)),
        }
    }
}

/// A line of text and its width in character cells without escape codes.
struct Line {
    text: String,
    width: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            text: String::new(),
            width: 0,
        }
    }

    /// Appends `plain` painted by `paint` (which must only add escape codes).
    fn push(&mut self, plain: &str, paint: impl Fn(&str) -> String) {
        self.width += plain.chars().count();
        self.text.push_str(&paint(plain));
    }

    fn plain(&mut self, plain: &str) {
        self.push(plain, str::to_string);
    }
}

/// How much of a module's subtree is matched, and where it went.
#[derive(Debug, Clone, Default)]
struct ModuleStats {
    tensors: usize,
    matched: usize,
    /// The longest module path containing every counterpart (`None` until one is seen).
    counterpart: Option<String>,
    /// The distinct top-level modules of the counterparts, up to [`MAX_SPREAD_SHOWN`] + 1:
    /// shown when the counterparts share no module but the root.
    spread: Vec<String>,
}

/// Most top-level counterpart modules named for a module whose tensors went to several;
/// beyond this the line gives their number.
const MAX_SPREAD_SHOWN: usize = 3;

impl ModuleStats {
    /// What the `→` column shows: the common counterpart module, or when that is the
    /// root, the top-level modules the tensors went to.
    fn counterpart_text(&self) -> Option<String> {
        let c = self.counterpart.as_deref()?;
        if !c.is_empty() {
            return Some(c.to_string());
        }
        if self.spread.len() > MAX_SPREAD_SHOWN {
            return Some(format!("more than {MAX_SPREAD_SHOWN} top-level modules"));
        }
        Some(
            self.spread
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        "(top level)"
                    } else {
                        s.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(" + "),
        )
    }
}

/// The longest common dotted prefix of two module paths (`a.b.c`, `a.b.d` → `a.b`).
fn common_module(a: &str, b: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (x, y) in a.split('.').zip(b.split('.')) {
        if x != y {
            break;
        }
        out.push(x);
    }
    out.join(".")
}

/// Per module path of `spec` (root: ""), how many tensors of its subtree are matched
/// and the common module of their counterparts in `other`.
fn module_stats(
    spec: &ModelSpec,
    other: &ModelSpec,
    counterpart: &[Option<usize>],
) -> HashMap<String, ModuleStats> {
    let mut stats: HashMap<String, ModuleStats> = HashMap::new();
    for (i, t) in spec.tensors.iter().enumerate() {
        let there = counterpart[i].map(|j| other.tensors[j].module.as_str());
        let mut prefixes = vec![String::new()];
        if !t.module.is_empty() {
            let mut p = String::new();
            for part in t.module.split('.') {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(part);
                prefixes.push(p.clone());
            }
        }
        for p in prefixes {
            let s = stats.entry(p).or_default();
            s.tensors += 1;
            if let Some(m) = there {
                s.matched += 1;
                let first = m.split('.').next().unwrap_or("");
                if s.spread.len() <= MAX_SPREAD_SHOWN && !s.spread.iter().any(|x| x == first) {
                    s.spread.push(first.to_string());
                }
                s.counterpart = Some(match &s.counterpart {
                    None => m.to_string(),
                    Some(c) => common_module(c, m),
                });
            }
        }
    }
    stats
}

/// One side's rendering context.
struct Side<'a> {
    spec: &'a ModelSpec,
    /// For each tensor, its counterpart's index on the other side (`None` without a mapping).
    counterpart: Option<Vec<Option<usize>>>,
    stats: HashMap<String, ModuleStats>,
    style: Style,
}

impl Side<'_> {
    fn mark(&self, line: &mut Line, matched: usize, total: usize) {
        if self.counterpart.is_none() {
            return;
        }
        let st = self.style;
        if total > 0 && matched == total {
            line.push(MARK_MATCHED, |s| st.green(s));
        } else if matched > 0 {
            line.push(MARK_PARTIAL, |s| st.yellow(s));
        } else {
            line.push(MARK_UNMATCHED, |s| st.red(s));
        }
        line.plain(" ");
    }

    fn module_line(&self, node: &ModuleNode, level: usize, folded: bool) -> Line {
        let st = self.style;
        let mut line = Line::new();
        line.plain(&"  ".repeat(level));
        let stats = self.stats.get(&node.path).cloned().unwrap_or_default();
        self.mark(&mut line, stats.matched, stats.tensors);
        let name = if node.path.is_empty() {
            "(top level)"
        } else {
            node.name.as_str()
        };
        line.push(name, |s| st.bold(s));
        if folded {
            let text = match self.counterpart {
                Some(_) => format!("  ({} tensors, {} matched)", stats.tensors, stats.matched),
                None => format!("  ({} tensors)", stats.tensors),
            };
            line.push(&text, |s| st.dim(s));
        } else {
            for &i in &node.tensors {
                line.plain("  ");
                let t = &self.spec.tensors[i];
                let unmatched = self.counterpart.as_ref().is_some_and(|c| c[i].is_none());
                if unmatched {
                    line.push(&format!("{MARK_UNMATCHED}{}", badge(t)), |s| st.red(s));
                } else {
                    line.plain(&badge(t));
                }
            }
        }
        if self.counterpart.is_some() {
            if let Some(shown) = stats.counterpart_text() {
                line.push(&format!("  → {shown}"), |s| st.cyan(s));
            }
            if stats.matched > 0 && stats.matched < stats.tensors {
                line.push(
                    &format!("  {}/{} matched", stats.matched, stats.tensors),
                    |s| st.yellow(s),
                );
            }
        }
        line
    }

    /// The tree as lines, without recursion (module paths can be arbitrarily deep).
    fn lines(&self, depth: Option<usize>) -> Vec<Line> {
        let root = self.spec.module_tree();
        let mut out = Vec::new();
        if !root.tensors.is_empty() {
            out.push(self.module_line(&root, 0, false));
        }
        let mut stack: Vec<(&ModuleNode, usize)> =
            root.children.iter().rev().map(|c| (c, 0)).collect();
        while let Some((node, level)) = stack.pop() {
            let folded = depth.is_some_and(|d| level + 1 >= d) && !node.children.is_empty();
            out.push(self.module_line(node, level, folded));
            if !folded {
                stack.extend(node.children.iter().rev().map(|c| (c, level + 1)));
            }
        }
        out
    }
}

fn legend(mapped: bool) -> String {
    let mut s = String::from("W weight, B bias, buf: buffer");
    if mapped {
        let _ = write!(
            s,
            "; {MARK_MATCHED} every tensor matched, {MARK_PARTIAL} some, {MARK_UNMATCHED} none; → the module its tensors went to"
        );
    }
    s
}

/// One model's module tree with badges and shapes.
pub fn render_tree(spec: &ModelSpec, opts: &TreeOptions) -> String {
    let style = Style::new(opts.color);
    let side = Side {
        spec,
        counterpart: None,
        stats: module_stats(spec, spec, &vec![None; spec.tensors.len()]),
        style,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        style.bold(&format!("{} ({} tensors)", spec.path, spec.tensors.len()))
    );
    for l in side.lines(opts.depth) {
        let _ = writeln!(out, "{}", l.text);
    }
    let _ = writeln!(out, "{}", style.dim(&legend(false)));
    out
}

/// The source and target module trees side by side, each module marked by how much of
/// it is matched (by `pairs`) and with the module its tensors went to.
pub fn render_side_by_side(
    source: &ModelSpec,
    target: &ModelSpec,
    pairs: &[TreePair],
    opts: &TreeOptions,
) -> String {
    let style = Style::new(opts.color);
    let mut s_to_t = vec![None; source.tensors.len()];
    let mut t_to_s = vec![None; target.tensors.len()];
    for p in pairs {
        if p.source < s_to_t.len() && p.target < t_to_s.len() {
            s_to_t[p.source] = Some(p.target);
            t_to_s[p.target] = Some(p.source);
        }
    }
    let left = Side {
        spec: source,
        stats: module_stats(source, target, &s_to_t),
        counterpart: Some(s_to_t),
        style,
    };
    let right = Side {
        spec: target,
        stats: module_stats(target, source, &t_to_s),
        counterpart: Some(t_to_s),
        style,
    };
    let mut l = left.lines(opts.depth);
    let mut r = right.lines(opts.depth);
    let mut lh = Line::new();
    lh.push(
        &format!("SOURCE {} ({} tensors)", source.path, source.tensors.len()),
        |s| style.bold(s),
    );
    let mut rh = Line::new();
    rh.push(
        &format!("TARGET {} ({} tensors)", target.path, target.tensors.len()),
        |s| style.bold(s),
    );
    l.insert(0, lh);
    r.insert(0, rh);
    let width = l.iter().map(|x| x.width).max().unwrap_or(0);
    let mut out = String::new();
    for i in 0..l.len().max(r.len()) {
        let (lt, lw) = l.get(i).map_or(("", 0), |x| (x.text.as_str(), x.width));
        let row = match r.get(i) {
            Some(x) => format!(
                "{lt}{}{}{}",
                " ".repeat(width - lw),
                style.dim(COLUMN_SEPARATOR),
                x.text
            ),
            None => lt.to_string(),
        };
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let matched = pairs.len();
    let count = |v: &Option<Vec<Option<usize>>>| {
        v.as_ref()
            .map_or(0, |v| v.iter().filter(|x| x.is_some()).count())
    };
    let (ms, mt) = (count(&left.counterpart), count(&right.counterpart));
    let _ = writeln!(
        out,
        "{matched} pairs; {} of {} source and {} of {} target tensors unmatched",
        source.tensors.len().saturating_sub(ms),
        source.tensors.len(),
        target.tensors.len().saturating_sub(mt),
        target.tensors.len()
    );
    let _ = writeln!(out, "{}", style.dim(&legend(true)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    fn spec(path: &str, names: &[(&str, Vec<i64>)]) -> ModelSpec {
        ModelSpec::from_shapes(path, Format::SpecJson, names)
    }

    #[test]
    fn common_module_is_the_shared_prefix() {
        assert_eq!(common_module("a.b.c", "a.b.d"), "a.b");
        assert_eq!(common_module("a.b", "a.b"), "a.b");
        assert_eq!(common_module("x", "y"), "");
    }

    #[test]
    fn side_by_side_marks_counterparts_and_unmatched() {
        let s = spec(
            "s",
            &[
                ("layer1.0.conv.weight", vec![4, 4]),
                ("layer1.0.bn.running_mean", vec![4]),
                ("head.bias", vec![3]),
            ],
        );
        let t = spec(
            "t",
            &[
                ("stages.0.block.conv.weight", vec![4, 4]),
                ("stages.0.block.norm.running_mean", vec![4]),
                ("fc.bias", vec![7]),
            ],
        );
        let pairs = [
            TreePair {
                source: 0,
                target: 0,
                score: Some(1.0),
            },
            TreePair {
                source: 1,
                target: 1,
                score: None,
            },
        ];
        let out = render_side_by_side(&s, &t, &pairs, &TreeOptions::default());
        assert!(out.contains("✓ layer1  → stages.0.block"), "{out}");
        assert!(
            out.contains("✓ conv  W[4,4]  → stages.0.block.conv"),
            "{out}"
        );
        assert!(out.contains("buf:running_mean[4]"), "{out}");
        assert!(out.contains("✗ head  ✗B[3]"), "{out}");
        assert!(out.contains("│ ✓ stages  → layer1.0"), "{out}");
        assert!(
            out.contains("◐ (top level)") || !out.contains("(top level)"),
            "{out}"
        );
        let folded = render_side_by_side(
            &s,
            &t,
            &pairs,
            &TreeOptions {
                depth: Some(1),
                color: false,
            },
        );
        assert!(
            folded.contains("✓ layer1  (2 tensors, 2 matched)  → stages.0.block"),
            "{folded}"
        );
        assert!(!folded.contains("conv"), "{folded}");
    }

    #[test]
    fn single_tree_has_badges_and_no_marks() {
        let s = spec(
            "s",
            &[("cls_token", vec![1, 1, 8]), ("blocks.0.fc.bias", vec![8])],
        );
        let out = render_tree(&s, &TreeOptions::default());
        assert!(out.contains("(top level)  cls_token[1,1,8]"), "{out}");
        assert!(out.contains("    fc  B[8]"), "{out}");
        assert!(
            !out.contains(MARK_MATCHED) && !out.contains(MARK_UNMATCHED),
            "{out}"
        );
    }
}
