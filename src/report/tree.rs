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
    /// Widest line in character cells (`None`: as wide as the lines are); longer lines
    /// are cut with `…`, and side by side, the two trees share it.
    pub width: Option<usize>,
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

/// How a segment of a line is painted (adds escape codes only).
type Paint = Box<dyn Fn(&str) -> String>;

/// A line of text as painted segments; its width counts character cells without escape
/// codes, so that it can be cut to a terminal's width and stay colored.
struct Line {
    segments: Vec<(String, Paint)>,
    width: usize,
}

/// Marks where a line was cut to fit the width.
const CUT_MARK: char = '…';

impl Line {
    fn new() -> Line {
        Line {
            segments: Vec::new(),
            width: 0,
        }
    }

    /// Appends `plain` painted by `paint` (which must only add escape codes).
    fn push(&mut self, plain: &str, paint: impl Fn(&str) -> String + 'static) {
        self.width += plain.chars().count();
        self.segments.push((plain.to_string(), Box::new(paint)));
    }

    fn plain(&mut self, plain: &str) {
        self.push(plain, str::to_string);
    }

    /// The painted text, cut to at most `limit` cells (the last one then `…`), and its
    /// width in cells.
    fn render(&self, limit: Option<usize>) -> (String, usize) {
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = String::new();
        if self.width <= limit {
            for (plain, paint) in &self.segments {
                out.push_str(&paint(plain));
            }
            return (out, self.width);
        }
        let mut room = limit.saturating_sub(1);
        for (plain, paint) in &self.segments {
            let n = plain.chars().count();
            if n <= room {
                out.push_str(&paint(plain));
                room -= n;
                continue;
            }
            let cut: String = plain.chars().take(room).collect();
            out.push_str(&paint(&format!("{cut}{CUT_MARK}")));
            return (out, limit);
        }
        (out, limit)
    }
}

/// Children in the order of the file, but for numbered siblings (`0`, `1`, ... `10`), which
/// keep their places among the others and take them in numeric order: a file sorted by
/// name lists `layers.10` before `layers.2`, a model never does.
fn ordered_children(node: &ModuleNode) -> Vec<&ModuleNode> {
    let mut kids: Vec<&ModuleNode> = node.children.iter().collect();
    let number = |n: &ModuleNode| -> Option<u128> {
        (!n.name.is_empty() && n.name.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.name.parse().ok())
            .flatten()
    };
    let slots: Vec<usize> = (0..kids.len())
        .filter(|&i| number(kids[i]).is_some())
        .collect();
    let mut numbered: Vec<&ModuleNode> = slots.iter().map(|&i| kids[i]).collect();
    numbered.sort_by_key(|n| number(n));
    for (slot, n) in slots.into_iter().zip(numbered) {
        kids[slot] = n;
    }
    kids
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
            line.push(MARK_MATCHED, move |s| st.green(s));
        } else if matched > 0 {
            line.push(MARK_PARTIAL, move |s| st.yellow(s));
        } else {
            line.push(MARK_UNMATCHED, move |s| st.red(s));
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
        line.push(name, move |s| st.bold(s));
        if folded {
            let text = match self.counterpart {
                Some(_) => format!("  ({} tensors, {} matched)", stats.tensors, stats.matched),
                None => format!("  ({} tensors)", stats.tensors),
            };
            line.push(&text, move |s| st.dim(s));
        } else {
            for &i in &node.tensors {
                line.plain("  ");
                let t = &self.spec.tensors[i];
                let unmatched = self.counterpart.as_ref().is_some_and(|c| c[i].is_none());
                if unmatched {
                    line.push(&format!("{MARK_UNMATCHED}{}", badge(t)), move |s| st.red(s));
                } else {
                    line.plain(&badge(t));
                }
            }
        }
        if self.counterpart.is_some() {
            if let Some(shown) = stats.counterpart_text() {
                line.push(&format!("  → {shown}"), move |s| st.cyan(s));
            }
            if stats.matched > 0 && stats.matched < stats.tensors {
                line.push(
                    &format!("  {}/{} matched", stats.matched, stats.tensors),
                    move |s| st.yellow(s),
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
        let mut stack: Vec<(&ModuleNode, usize)> = ordered_children(&root)
            .into_iter()
            .rev()
            .map(|c| (c, 0))
            .collect();
        while let Some((node, level)) = stack.pop() {
            let folded = depth.is_some_and(|d| level + 1 >= d) && !node.children.is_empty();
            out.push(self.module_line(node, level, folded));
            if !folded {
                stack.extend(
                    ordered_children(node)
                        .into_iter()
                        .rev()
                        .map(|c| (c, level + 1)),
                );
            }
        }
        out
    }
}

/// `text` wrapped at spaces into lines of at most `width` cells (a word longer than that
/// is cut with `…`).
fn wrap(text: &str, width: Option<usize>) -> Vec<String> {
    let Some(width) = width.filter(|&w| text.chars().count() > w) else {
        return vec![text.to_string()];
    };
    let width = width.max(2);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let word: String = if word.chars().count() > width {
            word.chars().take(width - 1).chain([CUT_MARK]).collect()
        } else {
            word.to_string()
        };
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    lines.push(line);
    lines
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
    let mut title = Line::new();
    title.push(
        &format!("{} ({} tensors)", spec.path, spec.tensors.len()),
        move |s| style.bold(s),
    );
    let _ = writeln!(out, "{}", title.render(opts.width).0);
    for l in side.lines(opts.depth) {
        let _ = writeln!(out, "{}", l.render(opts.width).0);
    }
    for l in wrap(&legend(false), opts.width) {
        let _ = writeln!(out, "{}", style.dim(&l));
    }
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
        move |s| style.bold(s),
    );
    let mut rh = Line::new();
    rh.push(
        &format!("TARGET {} ({} tensors)", target.path, target.tensors.len()),
        move |s| style.bold(s),
    );
    l.insert(0, lh);
    r.insert(0, rh);
    // Both sides fit the width: each keeps what it needs when both fit, else the left
    // gets at least half of the room and gives the right what it can spare.
    let sep = COLUMN_SEPARATOR.chars().count();
    let lw = l.iter().map(|x| x.width).max().unwrap_or(0);
    let rw = r.iter().map(|x| x.width).max().unwrap_or(0);
    let (left_width, right_limit) = match opts.width {
        Some(total) if lw + sep + rw > total => {
            let room = total.saturating_sub(sep).max(2);
            let left = lw.min((room / 2).max(room.saturating_sub(rw))).max(1);
            (left, Some(room.saturating_sub(left).max(1)))
        }
        _ => (lw, None),
    };
    let mut out = String::new();
    for i in 0..l.len().max(r.len()) {
        let (lt, lw) = l
            .get(i)
            .map_or((String::new(), 0), |x| x.render(Some(left_width)));
        let row = match r.get(i) {
            Some(x) => format!(
                "{lt}{}{}{}",
                " ".repeat(left_width - lw),
                style.dim(COLUMN_SEPARATOR),
                x.render(right_limit).0
            ),
            None => lt,
        };
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let matched = pairs.len();
    let count = |v: &Option<Vec<Option<usize>>>| {
        v.as_ref()
            .map_or(0, |v| v.iter().filter(|x| x.is_some()).count())
    };
    let (ms, mt) = (count(&left.counterpart), count(&right.counterpart));
    let summary = format!(
        "{matched} pairs; {} of {} source and {} of {} target tensors unmatched",
        source.tensors.len().saturating_sub(ms),
        source.tensors.len(),
        target.tensors.len().saturating_sub(mt),
        target.tensors.len()
    );
    for l in wrap(&summary, opts.width) {
        let _ = writeln!(out, "{l}");
    }
    for l in wrap(&legend(true), opts.width) {
        let _ = writeln!(out, "{}", style.dim(&l));
    }
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
                ..TreeOptions::default()
            },
        );
        assert!(
            folded.contains("✓ layer1  (2 tensors, 2 matched)  → stages.0.block"),
            "{folded}"
        );
        assert!(!folded.contains("conv"), "{folded}");
    }

    #[test]
    fn numbered_siblings_in_numeric_order_among_the_others() {
        let names: Vec<(String, Vec<i64>)> = [
            "embed",
            "layers.0",
            "layers.1",
            "layers.10",
            "layers.2",
            "norm",
        ]
        .iter()
        .map(|m| (format!("{m}.weight"), vec![2]))
        .collect();
        let names: Vec<(&str, Vec<i64>)> =
            names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        let out = render_tree(&spec("s", &names), &TreeOptions::default());
        let order: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim_start().split(' ').next())
            .filter(|w| ["embed", "layers", "norm", "0", "1", "2", "10"].contains(w))
            .collect();
        assert_eq!(
            order,
            ["embed", "layers", "0", "1", "2", "10", "norm"],
            "{out}"
        );
    }

    #[test]
    fn lines_fit_the_width_and_keep_their_colors() {
        let names: Vec<(String, Vec<i64>)> = (0..3)
            .map(|i| {
                (
                    format!("encoder.blocks.{i}.attention.query_key_value.weight"),
                    vec![96, 32],
                )
            })
            .collect();
        let names: Vec<(&str, Vec<i64>)> =
            names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        let s = spec(
            "a/rather/long/path/to/the/source/checkpoint.safetensors",
            &names,
        );
        let t = spec("t.safetensors", &[("qkv.weight", vec![96, 32])]);
        let pairs = [TreePair {
            source: 0,
            target: 0,
            score: None,
        }];
        for width in [30, 60, 80] {
            for color in [false, true] {
                let opts = TreeOptions {
                    width: Some(width),
                    color,
                    ..TreeOptions::default()
                };
                for out in [
                    render_side_by_side(&s, &t, &pairs, &opts),
                    render_tree(&s, &opts),
                ] {
                    for line in out.lines() {
                        let plain = strip_ansi(line);
                        assert!(plain.chars().count() <= width, "{width}: {plain:?}");
                    }
                    if color {
                        assert!(out.contains("\x1b["), "{out}");
                    }
                }
            }
        }
        // Both sides start in the same column on every row.
        let opts = TreeOptions {
            width: Some(60),
            ..TreeOptions::default()
        };
        let out = render_side_by_side(&s, &t, &pairs, &opts);
        let columns: std::collections::BTreeSet<usize> = out
            .lines()
            .filter_map(|l| l.find(COLUMN_SEPARATOR).map(|b| l[..b].chars().count()))
            .collect();
        assert_eq!(columns.len(), 1, "{out}");
        assert!(out.contains(CUT_MARK), "{out}");
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
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
