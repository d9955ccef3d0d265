//! `explain`: the score of one source tensor taken apart. For its match (or, when it is
//! unmatched, its best candidate) every part of the score with its sub-scores, the
//! weight each carries and its contribution to the total, drawn as bars; then the best
//! alternatives, each with why it lost (which parts scored lower, by how much, and
//! whether another source tensor took it).

use crate::mapper::{Candidate, Explanation, Strategy, SuggestOptions};
use crate::report::terminal::{bar, match_type_mark, pad, shape_text, transform_name, Style};
use crate::score::{
    ScoreBreakdown, ScoreWeights, ShapeRelation, HIER_W_CONTEXT, HIER_W_DEPTH, HIER_W_ORDER,
    NAME_W_EDIT, NAME_W_SUBSTRING, NAME_W_TOKENS,
};
use std::fmt::Write;

/// Number of alternatives shown unless told otherwise.
pub const DEFAULT_ALTERNATIVES: usize = 5;
/// Smallest weighted difference (in score points) worth naming as a reason a candidate
/// lost; smaller ones are rounding noise.
pub const REASON_MIN_DIFFERENCE: f64 = 0.0005;

/// Options of [`explain_to_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainOptions {
    /// ANSI colors.
    pub color: bool,
    /// Number of alternatives listed.
    pub alternatives: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            color: false,
            alternatives: DEFAULT_ALTERNATIVES,
        }
    }
}

/// The weights the engine scores with under `opts`: `shape_only` drops the name part
/// (as [`crate::mapper::Mapper::suggest_mapping`] does), every other strategy uses the
/// weights given.
pub fn effective_weights(opts: &SuggestOptions) -> ScoreWeights {
    if opts.strategy == Strategy::ShapeOnly {
        opts.weights.without_names()
    } else {
        opts.weights
    }
}

fn relation_name(r: ShapeRelation) -> &'static str {
    match r {
        ShapeRelation::Equal => "equal",
        ShapeRelation::Transpose => "transposed",
        ShapeRelation::Reshape => "reshaped",
    }
}

/// Shares of the hierarchy score: depth, path (module context), order; the order share
/// is 0 and the others renormalized when the order is unknown (as the scorer does).
fn hierarchy_shares(order_known: bool) -> (f64, f64, f64) {
    let order = if order_known { HIER_W_ORDER } else { 0.0 };
    let sum = HIER_W_DEPTH + HIER_W_CONTEXT + order;
    (HIER_W_DEPTH / sum, HIER_W_CONTEXT / sum, order / sum)
}

/// The breakdown table of one pair.
fn write_breakdown(out: &mut String, b: &ScoreBreakdown, w: &ScoreWeights, st: &Style) {
    const LABEL: usize = 26;
    let _ = writeln!(
        out,
        "  {}",
        st.dim(&format!(
            "{}score   weight   contribution",
            pad("part", LABEL)
        ))
    );
    let part = |out: &mut String, label: &str, score: f64, weight: f64| {
        let contribution = score * weight;
        let _ = writeln!(
            out,
            "  {}{}  × {:.3}  = {:.3}   {}",
            st.bold(&pad(label, LABEL)),
            st.score(score, &format!("{score:.3}")),
            weight,
            contribution,
            st.score(score, &bar(score))
        );
    };
    let sub = |out: &mut String, label: &str, score: Option<f64>, share: f64, of: &str| {
        let text = match score {
            Some(s) => format!("{s:.3}  × {share:.2} of {of}   {}", st.dim(&bar(s))),
            None => st.dim("unknown (not counted)"),
        };
        let _ = writeln!(out, "    {}{text}", pad(label, LABEL - 2));
    };
    part(
        out,
        &format!("shape ({})", relation_name(b.shape_relation)),
        b.shape,
        w.shape,
    );
    part(out, "name", b.name, w.name);
    sub(
        out,
        "tokens (Jaccard)",
        Some(b.tokens),
        NAME_W_TOKENS,
        "name",
    );
    sub(out, "edit distance", Some(b.edit), NAME_W_EDIT, "name");
    sub(
        out,
        "common substring",
        Some(b.substring),
        NAME_W_SUBSTRING,
        "name",
    );
    part(out, "hierarchy", b.hierarchy, w.hierarchy);
    let (depth, path, order) = hierarchy_shares(b.order.is_some());
    sub(out, "depth", Some(b.depth), depth, "hierarchy");
    sub(
        out,
        "path (matched parents)",
        Some(b.context),
        path,
        "hierarchy",
    );
    sub(out, "order", b.order, order, "hierarchy");
    let _ = writeln!(
        out,
        "  {}{}   {}",
        st.bold(&pad("total", LABEL + 18)),
        st.score(b.total, &format!("{:.3}", b.total)),
        st.score(b.total, &bar(b.total))
    );
}

/// Why candidate `c` scored below (or not above) the reference pair `r`: the parts that
/// cost it the most, largest first, each as `part a vs b (−weighted difference)` with the
/// sub-score that dropped most.
pub fn why_lower(c: &ScoreBreakdown, r: &ScoreBreakdown, w: &ScoreWeights) -> Vec<String> {
    let mut reasons: Vec<(f64, String)> = Vec::new();
    let d_shape = w.shape * (c.shape - r.shape);
    if d_shape < -REASON_MIN_DIFFERENCE {
        reasons.push((
            d_shape,
            format!(
                "shape {} {:.2} vs {} {:.2} ({:+.3})",
                relation_name(c.shape_relation),
                c.shape,
                relation_name(r.shape_relation),
                r.shape,
                d_shape
            ),
        ));
    }
    let worst_sub = |subs: &[(&str, Option<f64>, Option<f64>)]| -> String {
        subs.iter()
            .filter_map(|(n, a, b)| Some((*n, (*a)?, (*b)?)))
            .filter(|(_, a, b)| a < b)
            .min_by(|x, y| (x.1 - x.2).total_cmp(&(y.1 - y.2)))
            .map(|(n, a, b)| format!(": {n} {a:.2} vs {b:.2}"))
            .unwrap_or_default()
    };
    let d_name = w.name * (c.name - r.name);
    if d_name < -REASON_MIN_DIFFERENCE {
        let why = worst_sub(&[
            ("tokens", Some(c.tokens), Some(r.tokens)),
            ("edit", Some(c.edit), Some(r.edit)),
            ("substring", Some(c.substring), Some(r.substring)),
        ]);
        reasons.push((
            d_name,
            format!("name {:.2} vs {:.2} ({d_name:+.3}{why})", c.name, r.name),
        ));
    }
    let d_hier = w.hierarchy * (c.hierarchy - r.hierarchy);
    if d_hier < -REASON_MIN_DIFFERENCE {
        let why = worst_sub(&[
            ("depth", Some(c.depth), Some(r.depth)),
            ("path", Some(c.context), Some(r.context)),
            ("order", c.order, r.order),
        ]);
        reasons.push((
            d_hier,
            format!(
                "hierarchy {:.2} vs {:.2} ({d_hier:+.3}{why})",
                c.hierarchy, r.hierarchy
            ),
        ));
    }
    reasons.sort_by(|a, b| a.0.total_cmp(&b.0));
    reasons.into_iter().map(|(_, s)| s).collect()
}

/// Renders the explanation. `weights` are the ones the scores were computed with
/// ([`effective_weights`]).
pub fn explain_to_text(e: &Explanation, weights: &ScoreWeights, opts: &ExplainOptions) -> String {
    let st = Style::new(opts.color);
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", st.bold(&e.source), shape_text(&e.shape));

    // The reference pair: the match, else the best candidate.
    let reference: Option<(ScoreBreakdown, &str)> = match &e.matched {
        Some(m) => {
            let b = e
                .candidates
                .iter()
                .find(|c| c.target == m.target)
                .map_or(m.breakdown, |c| c.breakdown);
            Some((b, m.target.as_str()))
        }
        None => e
            .candidates
            .first()
            .map(|c| (c.breakdown, c.target.as_str())),
    };

    match &e.matched {
        Some(m) => {
            let _ = writeln!(
                out,
                "  matched    {} {}",
                st.cyan(&m.target),
                shape_text(&m.target_shape)
            );
            let _ = writeln!(
                out,
                "             score {}  confidence {:.3}  {}  {}",
                st.score(m.score, &format!("{:.3}", m.score)),
                m.confidence,
                transform_name(&m.transform),
                match_type_mark(m.match_type)
            );
            let resolution = serde_json::to_value(m.resolution)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "             decided by {resolution}: {}",
                m.resolution_detail
            );
            if let Some(why) = &m.ambiguous {
                let _ = writeln!(out, "  {}  {}", st.yellow("AMBIGUOUS"), st.yellow(why));
            }
        }
        None => {
            let reason = e
                .unmatched
                .as_ref()
                .map_or_else(|| "not in the mapping".to_string(), |r| r.describe());
            let _ = writeln!(out, "  {}  {}", st.red("unmatched"), st.red(&reason));
        }
    }

    let _ = writeln!(out);
    let Some((reference, reference_name)) = reference else {
        let _ = writeln!(
            out,
            "{}",
            st.bold("No candidate: no target tensor of a compatible shape, role and dtype")
        );
        return out;
    };
    let title = if e.matched.is_some() {
        "Score breakdown against"
    } else {
        "Best candidate:"
    };
    let _ = writeln!(out, "{} {}", st.bold(title), st.cyan(reference_name));
    write_breakdown(&mut out, &reference, weights, &st);

    let others: Vec<&Candidate> = e
        .candidates
        .iter()
        .filter(|c| c.target != reference_name)
        .collect();
    let _ = writeln!(out);
    if others.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            st.bold("Alternatives: none (the only candidate of a compatible shape and role)")
        );
        return out;
    }
    let shown = others.len().min(opts.alternatives);
    let _ = writeln!(
        out,
        "{}",
        st.bold(&format!(
            "Alternatives ({shown} of {} other candidates)",
            others.len()
        ))
    );
    let me = e.matched.as_ref().map(|m| m.source_original.as_str());
    for (k, c) in others.iter().take(shown).enumerate() {
        let delta = c.breakdown.total - reference.total;
        let _ = writeln!(
            out,
            "  {}. {} {}  {} ({delta:+.3})",
            k + 1,
            c.target,
            shape_text(&c.shape),
            st.score(c.breakdown.total, &format!("{:.3}", c.breakdown.total)),
        );
        let mut reasons = why_lower(&c.breakdown, &reference, weights);
        if delta >= -REASON_MIN_DIFFERENCE {
            reasons.insert(
                0,
                match &e.matched {
                    Some(m) => format!("scores as high, but the structure decided ({})", m.resolution_detail),
                    None => "scores as high as the best candidate: a tie that neither names nor order break".into(),
                },
            );
        }
        match c.taken_by.as_deref() {
            Some(other) if Some(other) != me && other != e.source => {
                reasons.push(format!("taken by {other}"))
            }
            _ => {}
        }
        if reasons.is_empty() {
            reasons.push("differs by less than rounding".into());
        }
        let label = if e.matched.is_some() {
            "lost:"
        } else {
            "lower:"
        };
        let _ = writeln!(out, "     {} {}", st.dim(label), reasons.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakdown(shape: f64, name: f64, hierarchy: f64, w: &ScoreWeights) -> ScoreBreakdown {
        ScoreBreakdown {
            total: w.shape * shape + w.name * name + w.hierarchy * hierarchy,
            shape,
            name,
            hierarchy,
            shape_relation: if shape == 1.0 {
                ShapeRelation::Equal
            } else {
                ShapeRelation::Transpose
            },
            tokens: name,
            edit: name,
            substring: name,
            depth: 1.0,
            context: hierarchy,
            order: None,
        }
    }

    #[test]
    fn reasons_name_the_parts_that_cost_most_first() {
        let w = ScoreWeights::default();
        let r = breakdown(1.0, 0.9, 1.0, &w);
        let c = breakdown(0.7, 0.8, 0.2, &w);
        let why = why_lower(&c, &r, &w);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why[0].starts_with("hierarchy 0.20 vs 1.00 (-0.160: path 0.20 vs 1.00)"),
            "{why:?}"
        );
        assert!(
            why[1].starts_with("shape transposed 0.70 vs equal 1.00 (-0.150)"),
            "{why:?}"
        );
        assert!(why[2].starts_with("name 0.80 vs 0.90"), "{why:?}");
        assert!(why_lower(&r, &r, &w).is_empty());
    }

    #[test]
    fn hierarchy_shares_renormalize_without_order() {
        let (d, p, o) = hierarchy_shares(false);
        assert_eq!(o, 0.0);
        assert!((d + p - 1.0).abs() < 1e-12);
        let (d, p, o) = hierarchy_shares(true);
        assert!((d + p + o - 1.0).abs() < 1e-12);
    }
}
