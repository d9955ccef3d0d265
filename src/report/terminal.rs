//! The `map` analysis for a terminal: a summary (models, tensor counts, matched,
//! coverage, threshold, strategy, where each order came from), a table of mappings with
//! scores colored by band, transform marks, GROUP or INDIV, shapes and confidence, the
//! mappings that need a look, and every unmatched tensor with its reason.
//!
//! Everything renders to a `String`; the caller decides about color (off for `NO_COLOR`
//! and when the output is not a terminal) and prints. The small styling helpers here
//! ([`Style`], [`shape_text`], [`bar`]) are shared by the other text reports.

use crate::mapper::{MappingResult, Match, MatchType, OrderKind, Transform, Unmatched};
use std::fmt::Write;

/// Scores at or above this are shown green: a pair the evidence supports well.
pub const SCORE_GOOD: f64 = 0.8;
/// Scores at or above this (and below [`SCORE_GOOD`]) are shown yellow; below it, red.
/// Equal to the engine's default threshold, so red means "would not pass by default".
pub const SCORE_FAIR: f64 = 0.6;
/// Number of mappings the table shows unless told otherwise (`--top N`, `--all`).
pub const DEFAULT_TOP: usize = 20;
/// Width, in character cells, of the score bars drawn by [`bar`].
pub const BAR_WIDTH: usize = 20;

/// ANSI styling that can be switched off (`NO_COLOR`, output not a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit ANSI escape codes.
    pub color: bool,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";

/// The color band of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreBand {
    /// `score ≥ SCORE_GOOD`.
    Good,
    /// `SCORE_FAIR ≤ score < SCORE_GOOD`.
    Fair,
    /// `score < SCORE_FAIR`.
    Poor,
}

impl ScoreBand {
    /// The band of `score`.
    pub fn of(score: f64) -> ScoreBand {
        if score >= SCORE_GOOD {
            ScoreBand::Good
        } else if score >= SCORE_FAIR {
            ScoreBand::Fair
        } else {
            ScoreBand::Poor
        }
    }
}

impl Style {
    /// A style with color on or off.
    pub fn new(color: bool) -> Style {
        Style { color }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Bold text (headings).
    pub fn bold(&self, text: &str) -> String {
        self.paint(BOLD, text)
    }

    /// Dimmed text (secondary details).
    pub fn dim(&self, text: &str) -> String {
        self.paint(DIM, text)
    }

    /// Red text (problems).
    pub fn red(&self, text: &str) -> String {
        self.paint(RED, text)
    }

    /// Green text (good news).
    pub fn green(&self, text: &str) -> String {
        self.paint(GREEN, text)
    }

    /// Yellow text (warnings).
    pub fn yellow(&self, text: &str) -> String {
        self.paint(YELLOW, text)
    }

    /// Cyan text (names of counterparts).
    pub fn cyan(&self, text: &str) -> String {
        self.paint(CYAN, text)
    }

    /// `text` colored by the band of `score` (green, yellow, red).
    pub fn score(&self, score: f64, text: &str) -> String {
        match ScoreBand::of(score) {
            ScoreBand::Good => self.green(text),
            ScoreBand::Fair => self.yellow(text),
            ScoreBand::Poor => self.red(text),
        }
    }
}

/// `[16,3,3,3]`; `[]` for a scalar.
pub fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// A horizontal bar of `value` in `[0, 1]` over [`BAR_WIDTH`] cells, in unicode block
/// eighths, padded with light shade so that bars line up.
pub fn bar(value: f64) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let v = if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let total = (v * (BAR_WIDTH * 8) as f64).round() as usize;
    let (full, rest) = (total / 8, total % 8);
    let mut s = "█".repeat(full);
    let mut cells = full;
    if rest > 0 {
        s.push(EIGHTHS[rest]);
        cells += 1;
    }
    s.push_str(&"░".repeat(BAR_WIDTH - cells));
    s
}

/// Pads `text` with spaces to `width` character cells (counting chars, not bytes).
pub fn pad(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n >= width {
        text.to_string()
    } else {
        format!("{text}{}", " ".repeat(width - n))
    }
}

/// How an order is described in the summary.
pub fn order_name(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Dynamic => "execution order (traced)",
        OrderKind::Static => "execution order (graph)",
        OrderKind::Registration => "registration order",
        OrderKind::File => "file order",
        OrderKind::NamesOnly => "indices in names only",
        OrderKind::None => "none",
    }
}

/// The transform mark of a match: `ambiguous` (wins over the rest: the user must check
/// it), `transpose`, `reshape` or `exact`.
pub fn transform_mark(m: &Match) -> &'static str {
    if m.ambiguous.is_some() {
        return "ambiguous";
    }
    transform_name(&m.transform)
}

/// `exact`, `transpose` or `reshape`.
pub fn transform_name(t: &Option<Transform>) -> &'static str {
    match t {
        None => "exact",
        Some(Transform::Transpose) => "transpose",
        Some(Transform::Reshape(_)) => "reshape",
    }
}

/// `GROUP` or `INDIV`.
pub fn match_type_mark(t: MatchType) -> &'static str {
    match t {
        MatchType::Group => "GROUP",
        MatchType::Individual => "INDIV",
    }
}

/// The shape column: the source shape, with the target shape when they differ.
fn shapes_text(m: &Match) -> String {
    if m.source_shape == m.target_shape {
        shape_text(&m.source_shape)
    } else {
        format!(
            "{}→{}",
            shape_text(&m.source_shape),
            shape_text(&m.target_shape)
        )
    }
}

/// Which mappings the table lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The `n` best by score (ties in source order).
    Top(usize),
    /// Every mapping.
    All,
}

/// Options of [`map_to_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapTextOptions {
    /// ANSI colors.
    pub color: bool,
    /// Which mappings the table lists.
    pub rows: Rows,
}

impl Default for MapTextOptions {
    fn default() -> Self {
        MapTextOptions {
            color: false,
            rows: Rows::Top(DEFAULT_TOP),
        }
    }
}

/// Percentage with one decimal (`96.8%`).
fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Renders the `map` analysis. The table lists mappings best score first (ties in
/// source order), so the weakest pairs are the last ones read before the unmatched
/// tensors; ambiguous mappings are also listed on their own with their evidence,
/// whatever the row limit, because they must never pass unseen.
pub fn map_to_text(result: &MappingResult, opts: &MapTextOptions) -> String {
    let st = Style::new(opts.color);
    let mut out = String::new();
    write_summary(&mut out, result, &st);

    let mut order: Vec<&Match> = result.mappings.iter().collect();
    // Stable sort: equal scores keep source order.
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let shown = match opts.rows {
        Rows::All => order.len(),
        Rows::Top(n) => n.min(order.len()),
    };
    let _ = writeln!(out);
    let heading = if shown == order.len() {
        format!("Mappings ({}, best score first)", order.len())
    } else {
        format!(
            "Mappings (top {shown} of {}, best score first; --all lists every one)",
            order.len()
        )
    };
    let _ = writeln!(out, "{}", st.bold(&heading));
    if order.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        write_table(&mut out, &order[..shown], &st);
    }

    let pinned: Vec<&Match> = result
        .mappings
        .iter()
        .filter(|m| m.resolution == crate::mapper::Resolution::Pinned)
        .collect();
    if !pinned.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.bold(&format!(
                "Pinned by you ({}; the rest was solved around them)",
                pinned.len()
            ))
        );
        for m in pinned {
            let _ = writeln!(out, "  {} → {}", m.source_original, m.target);
        }
    }

    let flagged: Vec<(&Match, String)> = result
        .mappings
        .iter()
        .filter_map(|m| m.needs_review().map(|why| (m, why)))
        .collect();
    if !flagged.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.bold(&format!("Needs review ({})", flagged.len()))
        );
        for (m, why) in flagged {
            let _ = writeln!(out, "  {} → {}", m.source_original, m.target);
            let _ = writeln!(out, "    {}", st.yellow(&why));
        }
    }

    // Conversions: what `apply` will execute, why, and what to check.
    if !result.conversions.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            st.bold(&format!(
                "Conversions ({}, written to the mapping file)",
                result.conversions.len()
            ))
        );
        for c in &result.conversions {
            let _ = writeln!(out, "  {}", c.describe());
            let _ = writeln!(
                out,
                "    confidence {:.2}: {}",
                c.confidence.unwrap_or(0.0),
                c.reason.as_deref().unwrap_or("")
            );
            if let Some(a) = &c.ambiguous {
                let _ = writeln!(out, "    {}", st.yellow(&format!("check: {a}")));
            }
        }
    }

    write_unmatched(
        &mut out,
        "Unmatched source tensors",
        &result.unmatched_source,
        &st,
    );
    write_unmatched(
        &mut out,
        "Unmatched target tensors",
        &result.unmatched_target,
        &st,
    );
    if let Some(hint) = result.settle_hint() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", st.yellow(&hint));
    }
    out
}

fn write_summary(out: &mut String, r: &MappingResult, st: &Style) {
    let label = |s: &str| st.bold(&pad(s, 11));
    let _ = writeln!(
        out,
        "{}{} ({}, {} tensors)",
        label("source"),
        r.source.path,
        r.source.format,
        r.source.tensors
    );
    let _ = writeln!(
        out,
        "{}{} ({}, {} tensors)",
        label("target"),
        r.target.path,
        r.target.format,
        r.target.tensors
    );
    let coverage = r.coverage();
    let cov_text = percent(coverage);
    let cov = if coverage >= 1.0 - 1e-12 {
        st.green(&cov_text)
    } else {
        st.yellow(&cov_text)
    };
    let _ = writeln!(
        out,
        "{}{} of {} target tensors ({cov} coverage)",
        label("matched"),
        r.mappings.len(),
        r.target.tensors
    );
    let c = crate::report::counts::summary_counts(r);
    let unmatched = format!(
        "{} source, {} target",
        c.unmatched_source, c.unmatched_target
    );
    let unmatched = if c.unmatched_source == 0 && c.unmatched_target == 0 {
        unmatched
    } else {
        st.yellow(&unmatched)
    };
    let _ = writeln!(out, "{}{unmatched}", label("unmatched"));
    let _ = writeln!(
        out,
        "{}{} exact, {} transpose, {} reshape; {} need review; {} in groups, {} individual",
        label("marks"),
        c.exact,
        c.transpose,
        c.reshape,
        c.needs_review,
        c.groups,
        c.matched - c.groups
    );
    let _ = writeln!(
        out,
        "{}{:.2} ({}; weights shape {:.2}, name {:.2}, hierarchy {:.2})",
        label("threshold"),
        r.threshold,
        r.strategy.name(),
        r.weights.shape,
        r.weights.name,
        r.weights.hierarchy
    );
    let _ = writeln!(
        out,
        "{}source: {}; target: {}",
        label("order"),
        order_name(r.source.order),
        order_name(r.target.order)
    );
}

fn write_table(out: &mut String, rows: &[&Match], st: &Style) {
    const HEADERS: [&str; 7] = ["SCORE", "CONF", "SOURCE", "TARGET", "SHAPE", "MARK", "TYPE"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|m| {
            [
                format!("{:.3}", m.score),
                format!("{:.3}", m.confidence),
                m.source_original.clone(),
                m.target.clone(),
                shapes_text(m),
                match m.ambiguous {
                    // Say which way it was decided: the reader must check exactly that.
                    Some(_) => format!("ambiguous ({})", transform_name(&m.transform)),
                    None => transform_mark(m).to_string(),
                },
                match_type_mark(m.match_type).to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header: Vec<String> = HEADERS.iter().zip(widths).map(|(h, w)| pad(h, w)).collect();
    let _ = writeln!(out, "  {}", st.dim(header.join("  ").trim_end()));
    for (m, row) in rows.iter().zip(&cells) {
        let mut parts: Vec<String> = Vec::with_capacity(7);
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            // The last column is not padded, so lines carry no trailing spaces.
            let text = if i + 1 == row.len() {
                c.clone()
            } else {
                pad(c, w)
            };
            parts.push(match i {
                0 => st.score(m.score, &text),
                5 if m.ambiguous.is_some() => st.yellow(&text),
                5 if m.transform.is_some() => st.cyan(&text),
                _ => text,
            });
        }
        let _ = writeln!(out, "  {}", parts.join("  "));
    }
}

/// The unmatched tensors, with names that differ only in indices (and reasons naming
/// the same indices) collapsed into one line by [`crate::report::patterns`]: a count, the
/// pattern with its shape, and the reason.
fn write_unmatched(out: &mut String, title: &str, list: &[Unmatched], st: &Style) {
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", st.bold(&format!("{title} ({})", list.len())));
    if list.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                format!("{} {}", u.original_name, shape_text(&u.shape)),
                u.reason.describe(),
            ]
        })
        .collect();
    let collapsed = crate::report::patterns::collapse(&rows);
    let counted = collapsed.iter().any(|c| c.count() > 1);
    let counts: Vec<String> = collapsed
        .iter()
        .map(|c| {
            if c.count() > 1 {
                format!("{}×", c.count())
            } else {
                String::new()
            }
        })
        .collect();
    let count_width = counts.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let width = collapsed
        .iter()
        .map(|c| c.fields[0].chars().count())
        .max()
        .unwrap_or(0);
    for (c, n) in collapsed.iter().zip(&counts) {
        let lead = if counted {
            format!("{:>count_width$} ", n)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {lead}{}  {}",
            pad(&c.fields[0], width),
            st.red(&c.fields[1])
        );
    }
    if counted {
        let _ = writeln!(
            out,
            "  {}",
            st.dim("N× NAME: N tensors; {a..b} every index a to b, {a,b} those, {=K} the K-th brace again")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_documented_boundaries() {
        assert_eq!(ScoreBand::of(0.8), ScoreBand::Good);
        assert_eq!(ScoreBand::of(0.7999), ScoreBand::Fair);
        assert_eq!(ScoreBand::of(0.6), ScoreBand::Fair);
        assert_eq!(ScoreBand::of(0.5999), ScoreBand::Poor);
        let st = Style::new(true);
        assert_eq!(st.score(0.9, "x"), "\x1b[32mx\x1b[0m");
        assert_eq!(st.score(0.7, "x"), "\x1b[33mx\x1b[0m");
        assert_eq!(st.score(0.1, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Style::new(false).score(0.1, "x"), "x");
    }

    #[test]
    fn bars_have_a_fixed_width() {
        for v in [0.0, 0.01, 0.5, 0.73, 1.0, 2.0, f64::NAN] {
            assert_eq!(bar(v).chars().count(), BAR_WIDTH, "{v}");
        }
        assert_eq!(bar(1.0), "█".repeat(BAR_WIDTH));
        assert_eq!(bar(0.0), "░".repeat(BAR_WIDTH));
        assert!(bar(0.5).starts_with(&"█".repeat(BAR_WIDTH / 2)));
    }

    #[test]
    fn pad_counts_characters() {
        assert_eq!(pad("→a", 4), "→a  ");
        assert_eq!(pad("abcdef", 3), "abcdef");
        assert_eq!(shape_text(&[]), "[]");
        assert_eq!(shape_text(&[3, 4]), "[3,4]");
    }
}
