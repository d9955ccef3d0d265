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
            // A result names targets as written in their file (`model.` kept on HF
            // targets), sources both ways: either is looked up.
            let source = s_index
                .get(m.source.as_str())
                .or_else(|| by_original.get(m.source_original.as_str()))?;
            let target = t_index
                .get(m.target.as_str())
                .or_else(|| t_by_original.get(m.target.as_str()))?;
            Some(TreePair {
                source: *source,
                target: *target,
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
type Paint = std::rc::Rc<dyn Fn(&str) -> String>;

/// A line of text as painted segments; its width counts character cells without escape
/// codes, so that it can be cut to a terminal's width and stay colored.
#[derive(Clone)]
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
        self.segments
            .push((plain.to_string(), std::rc::Rc::new(paint)));
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

    /// The tree as lines, without recursion (module paths can be arbitrarily deep), with
    /// numbered sibling modules that differ only in their indices collapsed ([`collapse`]).
    /// The lines, and whether some modules were collapsed.
    fn lines(&self, depth: Option<usize>) -> (Vec<Line>, bool) {
        let root = self.spec.module_tree();
        let mut out: Vec<TreeLine> = Vec::new();
        if !root.tensors.is_empty() {
            out.push(self.tree_line(&root, 0, false));
        }
        let mut stack: Vec<(&ModuleNode, usize)> = ordered_children(&root)
            .into_iter()
            .rev()
            .map(|c| (c, 0))
            .collect();
        while let Some((node, level)) = stack.pop() {
            let folded = depth.is_some_and(|d| level + 1 >= d) && !node.children.is_empty();
            out.push(self.tree_line(node, level, folded));
            if !folded {
                stack.extend(
                    ordered_children(node)
                        .into_iter()
                        .rev()
                        .map(|c| (c, level + 1)),
                );
            }
        }
        collapse(out, self.style)
    }

    fn tree_line(&self, node: &ModuleNode, level: usize, folded: bool) -> TreeLine {
        TreeLine {
            line: self.module_line(node, level, folded),
            level,
            // The name follows the indent, and the mark and its space when there is one.
            name_segment: if self.counterpart.is_some() { 3 } else { 1 },
            numbered: !node.name.is_empty() && node.name.bytes().all(|b| b.is_ascii_digit()),
        }
    }
}

/// A module's line with what [`collapse`] needs to know of it.
#[derive(Clone)]
struct TreeLine {
    line: Line,
    level: usize,
    /// Which segment of `line` is the module's name.
    name_segment: usize,
    /// Whether the module's name is a number (a child of a ModuleList or Sequential).
    numbered: bool,
}

/// Collapses sibling modules named by numbers whose subtrees read the same but for their
/// indices (the 32 layers of a model, its 8 experts) into one subtree named by their
/// pattern (`{0..31}`, `{0,2}`; [`crate::report::patterns`], whose notation the legend
/// gives), followed by how many it stands for. Inside a collapsed block of one brace,
/// alike numbered modules collapse again when that adds braces but no `{=K}` (so that
/// every `{=K}` of the block still names the same brace).
fn collapse(lines: Vec<TreeLine>, style: Style) -> (Vec<Line>, bool) {
    let (out, collapsed) = collapse_runs(lines, style, true);
    (out.into_iter().map(|l| l.line).collect(), collapsed)
}

/// [`collapse`] over `lines`; `ties`: whether a pattern may tie braces (`{=K}`).
fn collapse_runs(lines: Vec<TreeLine>, style: Style, ties: bool) -> (Vec<TreeLine>, bool) {
    let mut collapsed = false;
    // Where each line's subtree ends (lines are in pre-order).
    let mut end = vec![lines.len(); lines.len()];
    let mut open: Vec<usize> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        while open.last().is_some_and(|&j| lines[j].level >= l.level) {
            end[open.pop().expect("not empty")] = i;
        }
        open.push(i);
    }
    let mut out: Vec<TreeLine> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        // A run of numbered siblings at this level starts here.
        let level = lines[i].level;
        let mut run = Vec::new();
        let mut j = i;
        while j < lines.len() && lines[j].level == level && lines[j].numbered {
            run.push(j);
            j = end[j];
        }
        if run.len() < 2 {
            out.push(lines[i].clone());
            i += 1;
            continue;
        }
        let rows: Vec<Vec<String>> = run
            .iter()
            .map(|&k| {
                let mut fields = Vec::new();
                for (n, l) in lines[k..end[k]].iter().enumerate() {
                    for (s, (plain, _)) in l.line.segments.iter().enumerate() {
                        fields.push(if n == 0 && s == l.name_segment {
                            format!(".{plain}") // a dotted component, so an index
                        } else {
                            plain.clone()
                        });
                    }
                }
                fields
            })
            .collect();
        for group in crate::report::patterns::collapse(&rows) {
            let first = run[group.members[0]];
            let tie_count = |fields: &[String]| -> usize {
                fields.iter().map(|f| f.matches("{=").count()).sum()
            };
            if group.count() == 1
                || (!ties && tie_count(&group.fields) > tie_count(&rows[group.members[0]]))
            {
                for &m in &group.members {
                    let k = run[m];
                    out.extend(lines[k..end[k]].iter().cloned());
                }
                continue;
            }
            collapsed = true;
            let mut fields = group.fields.into_iter();
            let mut block: Vec<TreeLine> = Vec::new();
            for (n, l) in lines[first..end[first]].iter().enumerate() {
                let mut line = Line::new();
                for (s, (_, paint)) in l.line.segments.iter().enumerate() {
                    let text = fields.next().expect("one field per segment");
                    let paint = paint.clone();
                    if n == 0 && s == l.name_segment {
                        line.push(text.trim_start_matches('.'), move |x| paint(x));
                        line.push(&format!("  {}×", group.members.len()), move |x| {
                            style.dim(x)
                        });
                    } else {
                        line.push(&text, move |x| paint(x));
                    }
                }
                block.push(TreeLine { line, ..l.clone() });
            }
            let braces: usize = block
                .iter()
                .flat_map(|l| &l.line.segments)
                .map(|(t, _)| t.matches('{').count() - t.matches("{=").count())
                .sum();
            let head = block.remove(0);
            out.push(head);
            if braces == 1 {
                out.extend(collapse_runs(block, style, false).0);
            } else {
                out.extend(block);
            }
        }
        i = j;
    }
    (out, collapsed)
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

fn legend(mapped: bool, collapsed: bool) -> String {
    let mut s = String::from("W weight, B bias, buf: buffer");
    if collapsed {
        s.push_str("; {0..3} N×: N numbered modules alike, {0,2} those, {=K} the K-th brace again");
    }
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
    let (lines, collapsed) = side.lines(opts.depth);
    for l in lines {
        let _ = writeln!(out, "{}", l.render(opts.width).0);
    }
    for l in wrap(&legend(false, collapsed), opts.width) {
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
    let (mut l, left_collapsed) = left.lines(opts.depth);
    let (mut r, right_collapsed) = right.lines(opts.depth);
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
    for l in wrap(&legend(true, left_collapsed || right_collapsed), opts.width) {
        let _ = writeln!(out, "{}", style.dim(&l));
    }
    out
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
