//! The HTML report: one self-contained page (no network, no external assets) with both
//! module trees side by side, matches drawn between them colored by score, collapsible
//! subtrees, a search box, filters (unmatched, needs review, transformed, ambiguous)
//! and the score breakdown of a match on click.
//!
//! The page embeds its data as JSON in a `<script type="application/json">` element,
//! escaped so that no tensor name can close the element, and the stylesheet and script
//! from `src/report/assets/` inline. The script renders lazily (a collapsed subtree has
//! no DOM until it is opened, and lines are drawn only for rows in view), so a model of
//! thousands of tensors opens at once. Opened as `report.html#selftest`, the page expands
//! everything, clicks a match and writes what it found as JSON into a hidden `pre`
//! element with id `wm-selftest` at the end of the body, which lets a headless browser
//! test it.

use crate::error::{Error, Result};
use crate::mapper::{
    Alternative, Conversion, MappingResult, Match, MatchType, ModelSummary, OrderKind, Resolution,
    ScoringSummary, Strategy, TensorOrder, Transform, Unmatched, UnmatchedReason,
};
use crate::output::OutputFile;
use crate::report::terminal::{transform_name, SCORE_FAIR, SCORE_GOOD};
use crate::report::tree::KNOWN_BUFFER_LEAVES;
use crate::score::{
    ScoreBreakdown, ScoreWeights, HIER_W_CONTEXT, HIER_W_DEPTH, HIER_W_ORDER, NAME_W_EDIT,
    NAME_W_SUBSTRING, NAME_W_TOKENS,
};
use crate::spec::{ModelSpec, TensorInfo, TensorKind};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The page's stylesheet.
const STYLE: &str = include_str!("assets/report.css");
/// The page's script.
const SCRIPT: &str = include_str!("assets/report.js");
/// Version of the embedded data layout, read by the script.
pub const DATA_VERSION: u32 = 1;

/// One mapping as `weightmap map --report` writes it.
#[derive(Deserialize)]
struct ReportMapping {
    source: String,
    target: String,
    score: f64,
    source_shape: Vec<i64>,
    target_shape: Vec<i64>,
    match_type: MatchType,
    #[serde(default)]
    transform: Option<Transform>,
    resolution: Resolution,
    #[serde(default)]
    resolution_detail: String,
    confidence: f64,
    #[serde(default)]
    ambiguous: Option<String>,
    breakdown: ScoreBreakdown,
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

/// One unmatched tensor as the report writes it.
#[derive(Deserialize)]
struct ReportUnmatched {
    name: String,
    shape: Vec<i64>,
    reason: UnmatchedReason,
}

/// The parts of a JSON report the page needs.
#[derive(Deserialize)]
struct ReportFile {
    source: ModelSummary,
    target: ModelSummary,
    strategy: Strategy,
    threshold: f64,
    weights: ScoreWeights,
    mappings: Vec<ReportMapping>,
    unmatched_source: Vec<ReportUnmatched>,
    unmatched_target: Vec<ReportUnmatched>,
    #[serde(default)]
    conversions: Vec<Conversion>,
    #[serde(default)]
    scoring: ScoringSummary,
    #[serde(default)]
    block_rules: Vec<crate::mapper::BlockRule>,
}

/// Rebuilds a mapping result from the JSON report of
/// [`MappingResult::to_report_json`] (`weightmap map --report`). Names are the ones the
/// report holds (as written in the files), so normalized and original names coincide.
/// `path` names the file in errors.
pub fn result_from_report_json(value: &Value, path: &Path) -> Result<MappingResult> {
    let r: ReportFile = serde_json::from_value(value.clone()).map_err(|e| {
        Error::corrupt(
            path,
            "weightmap report JSON",
            format!("{e}; expected the file written by `weightmap map --report FILE`"),
        )
    })?;
    let unmatched = |v: Vec<ReportUnmatched>| -> Vec<Unmatched> {
        v.into_iter()
            .map(|u| Unmatched {
                original_name: u.name.clone(),
                name: u.name,
                shape: u.shape,
                reason: u.reason,
            })
            .collect()
    };
    Ok(MappingResult {
        source: r.source,
        target: r.target,
        strategy: r.strategy,
        threshold: r.threshold,
        weights: r.weights,
        mappings: r
            .mappings
            .into_iter()
            .map(|m| Match {
                source_original: m.source.clone(),
                source: m.source,
                target: m.target,
                source_shape: m.source_shape,
                target_shape: m.target_shape,
                score: m.score,
                breakdown: m.breakdown,
                transform: m.transform,
                match_type: m.match_type,
                resolution: m.resolution,
                resolution_detail: m.resolution_detail,
                confidence: m.confidence,
                alternatives: m.alternatives,
                ambiguous: m.ambiguous,
            })
            .collect(),
        unmatched_source: unmatched(r.unmatched_source),
        unmatched_target: unmatched(r.unmatched_target),
        conversions: r.conversions,
        scoring: r.scoring,
        block_rules: r.block_rules,
    })
}

/// Reads a JSON report file (see [`result_from_report_json`]).
pub fn load_report_json(path: &Path) -> Result<MappingResult> {
    let value = crate::format::json::read_json(path)?;
    result_from_report_json(&value, path)
}

/// Compares names with their numbers as numbers (`layers.2` before `layers.10`), so that
/// trees rebuilt from a report without file order list blocks in index order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                // Compare without leading zeros: longer means larger, then digit by digit.
                let tx = &dx[dx.iter().take_while(|&&c| c == b'0').count()..];
                let ty = &dy[dy.iter().take_while(|&&c| c == b'0').count()..];
                let ord = tx
                    .len()
                    .cmp(&ty.len())
                    .then_with(|| tx.cmp(ty))
                    .then_with(|| nx.cmp(&ny));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// One side's tensors for the page: `[name as in the file, shape, 1 for a buffer else 0]`,
/// and an index from every name the result may use (normalized and original) to position.
fn side_tensors(
    spec: Option<&ModelSpec>,
    from_result: Vec<(String, Vec<i64>)>,
    order: Option<&TensorOrder>,
) -> (Vec<Value>, HashMap<String, usize>) {
    let mut list: Vec<(String, Vec<i64>, bool)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    match spec {
        Some(spec) => {
            // The order names tensors normalized or as written; unranked ones go last,
            // in file order (the sort is stable).
            let mut tensors: Vec<&TensorInfo> = spec.tensors.iter().collect();
            if let Some(order) = order {
                let rank: HashMap<&str, usize> = order
                    .names
                    .iter()
                    .enumerate()
                    .map(|(r, n)| (n.as_str(), r))
                    .rev()
                    .collect();
                tensors.sort_by_key(|t| {
                    rank.get(t.name.as_str())
                        .or_else(|| rank.get(t.original_name.as_str()))
                        .copied()
                        .unwrap_or(usize::MAX)
                });
            }
            for (i, t) in tensors.into_iter().enumerate() {
                let buffer = match t.kind {
                    TensorKind::Buffer => true,
                    TensorKind::Parameter => false,
                    TensorKind::Unknown => KNOWN_BUFFER_LEAVES.contains(&t.leaf.as_str()),
                };
                list.push((t.original_name.clone(), t.shape.clone(), buffer));
                index.entry(t.name.clone()).or_insert(i);
                index.insert(t.original_name.clone(), i);
            }
        }
        None => {
            let mut names = from_result;
            names.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            names.dedup_by(|a, b| a.0 == b.0);
            for (i, (name, shape)) in names.into_iter().enumerate() {
                let leaf = name.rsplit('.').next().unwrap_or("");
                let buffer = KNOWN_BUFFER_LEAVES.contains(&leaf);
                index.insert(name.clone(), i);
                list.push((name, shape, buffer));
            }
        }
    }
    let values = list
        .into_iter()
        .map(|(n, s, b)| json!([n, s, u8::from(b)]))
        .collect();
    (values, index)
}

/// Whether a match needs review: the one definition of [`Match::needs_review`], so the
/// page's filter counts what the terminal and `--json` count.
pub fn is_low_confidence(m: &Match) -> bool {
    m.needs_review().is_some()
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The data the page embeds. With the specs, the trees list every tensor in file order
/// with its kind, the target in `target_order` when that is an execution order (tensors
/// without a rank after, in file order); without (a page built from a saved report),
/// they list the tensors the report names, in natural name order, buffers known by their
/// leaf names.
pub fn report_data(
    result: &MappingResult,
    source: Option<&ModelSpec>,
    target: Option<&ModelSpec>,
    target_order: Option<&TensorOrder>,
) -> Value {
    let s_names = result
        .mappings
        .iter()
        .map(|m| (m.source_original.clone(), m.source_shape.clone()))
        .chain(
            result
                .unmatched_source
                .iter()
                .map(|u| (u.original_name.clone(), u.shape.clone())),
        )
        .collect();
    let t_names = result
        .mappings
        .iter()
        .map(|m| (m.target.clone(), m.target_shape.clone()))
        .chain(
            result
                .unmatched_target
                .iter()
                .map(|u| (u.original_name.clone(), u.shape.clone())),
        )
        .collect();
    let (s_list, s_index) = side_tensors(source, s_names, None);
    let execution =
        target_order.filter(|o| matches!(o.kind, OrderKind::Dynamic | OrderKind::Static));
    let (t_list, t_index) = side_tensors(target, t_names, execution);
    let s_pos = |m: &Match| {
        s_index
            .get(&m.source)
            .or_else(|| s_index.get(&m.source_original))
            .copied()
    };

    let matches: Vec<Value> = result
        .mappings
        .iter()
        .filter_map(|m| {
            let (s, t) = (s_pos(m)?, *t_index.get(&m.target)?);
            let b = &m.breakdown;
            let relation = serde_json::to_value(b.shape_relation).unwrap_or(Value::Null);
            let alternatives: Vec<Value> = m
                .alternatives
                .iter()
                .map(|a| json!([t_index.get(&a.target).map_or(-1, |&i| i as i64), a.target, round4(a.score)]))
                .collect();
            Some(json!({
                "s": s,
                "t": t,
                "sc": round4(m.score),
                "cf": round4(m.confidence),
                "tr": transform_name(&m.transform),
                "ty": match m.match_type { MatchType::Group => "GROUP", MatchType::Individual => "INDIV" },
                "rs": serde_json::to_value(m.resolution).unwrap_or(Value::Null),
                "dt": m.resolution_detail,
                "am": m.ambiguous,
                "lo": is_low_confidence(m),
                "b": [round4(b.total), round4(b.shape), round4(b.name), round4(b.hierarchy), round4(b.tokens),
                      round4(b.edit), round4(b.substring), round4(b.depth), round4(b.context), b.order.map(round4), relation],
                "al": alternatives,
            }))
        })
        .collect();
    let unmatched = |list: &[Unmatched], index: &HashMap<String, usize>| -> Vec<Value> {
        list.iter()
            .filter_map(|u| {
                let i = index.get(&u.name).or_else(|| index.get(&u.original_name))?;
                Some(json!([i, u.reason.describe()]))
            })
            .collect()
    };
    let s_patterns = unmatched_patterns(&result.unmatched_source, &s_index);
    let t_patterns = unmatched_patterns(&result.unmatched_target, &t_index);
    json!({
        "v": DATA_VERSION,
        "source": result.source,
        "target": result.target,
        "strategy": result.strategy,
        "threshold": result.threshold,
        "weights": result.weights,
        "coverage": round4(result.coverage()),
        "counts": crate::report::counts::summary_counts(result),
        "bands": {"good": SCORE_GOOD, "fair": SCORE_FAIR},
        "sub": {"name": [NAME_W_TOKENS, NAME_W_EDIT, NAME_W_SUBSTRING], "hier": [HIER_W_DEPTH, HIER_W_CONTEXT, HIER_W_ORDER]},
        "s": s_list,
        "t": t_list,
        "m": matches,
        "us": unmatched(&result.unmatched_source, &s_index),
        "ut": unmatched(&result.unmatched_target, &t_index),
        // The unmatched lists as the terminal collapses them (report::patterns): per row
        // [name pattern, shape, reason pattern, tensor indices it stands for].
        "up": {"s": s_patterns, "t": t_patterns},
        // Per conversion, each (source, target) it relates, as indices into "s" and "t".
        "cv": result.conversions.iter().map(|c| {
            c.sources
                .iter()
                .filter_map(|s| s_index.get(s))
                .flat_map(|&s| c.targets.iter().filter_map(|t| t_index.get(t)).map(move |&t| [s, t]))
                .collect::<Vec<_>>()
        }).collect::<Vec<_>>(),
        "rel": result.conversions.iter().map(|c| {
            let mut line = c.describe();
            if let Some(r) = &c.reason {
                line += &format!(" ({r})");
            }
            if let Some(a) = &c.ambiguous {
                line += &format!(" [check: {a}]");
            }
            line
        }).collect::<Vec<_>>(),
    })
}

/// `list` collapsed into index patterns, as `map` prints it: one
/// `[name pattern, shape, reason pattern, [indices into the side's tensors]]` per pattern,
/// in the order of the list (tensors the page does not show are left out).
fn unmatched_patterns(list: &[Unmatched], index: &HashMap<String, usize>) -> Vec<Value> {
    let (rows, positions): (Vec<Vec<String>>, Vec<usize>) = list
        .iter()
        .filter_map(|u| {
            let &i = index.get(&u.name).or_else(|| index.get(&u.original_name))?;
            let row = vec![
                u.original_name.clone(),
                crate::report::terminal::shape_text(&u.shape),
                u.reason.describe(),
            ];
            Some((row, i))
        })
        .unzip();
    crate::report::patterns::collapse(&rows)
        .into_iter()
        .map(|c| {
            let members: Vec<usize> = c.members.iter().map(|&k| positions[k]).collect();
            json!([c.fields[0], c.fields[1], c.fields[2], members])
        })
        .collect()
}

/// JSON text safe inside a `<script>` element: `<`, `>` and `&` are written as JSON
/// escapes, so no name can end the element (`</script>`) or open a comment (`<!--`),
/// and the text still parses to the same value.
pub fn script_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            // Line and paragraph separators are valid in JSON strings but not in
            // older JavaScript string literals; escape them for any consumer.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text escaped for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page for `data` ([`report_data`]).
pub fn render_html(data: &Value) -> String {
    let name = |side: &str| {
        data[side]["path"]
            .as_str()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .unwrap_or_default()
    };
    let title = escape_html(&format!(
        "weightmap: {} → {}",
        name("source"),
        name("target")
    ));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header id=\"summary\"><h1>{title}</h1><div id=\"stats\"></div></header>\n\
         <nav id=\"toolbar\"></nav>\n\
         <main id=\"main\"><section class=\"pane\" id=\"src-pane\" aria-label=\"source tree\"></section>\
         <div id=\"gutter\"><svg id=\"lines\" xmlns=\"http://www.w3.org/2000/svg\"></svg></div>\
         <section class=\"pane\" id=\"tgt-pane\" aria-label=\"target tree\"></section></main>\n\
         <aside id=\"details\"><div id=\"selection\"><p class=\"hint\">Click a tensor to see its match and score breakdown.</p></div>\
         <div id=\"unmatched\"></div></aside>\n\
         <noscript><p>This report needs JavaScript to draw the trees.</p></noscript>\n\
         <script type=\"application/json\" id=\"wm-data\">{}</script>\n\
         <script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        script_json(data)
    )
}

/// Writes the page to `path` through a temporary file renamed into place (replacing an
/// existing file, but never one of `inputs`).
pub fn write_html(path: &Path, html: &str, inputs: &[&Path]) -> Result<()> {
    let mut out = OutputFile::create(path, inputs, true)?;
    out.file()
        .write_all(html.as_bytes())
        .map_err(|e| Error::io(path, e))?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_the_element_and_round_trips() {
        let v = json!({"name": "a.</script><script>alert(1)</script>.b & <!-- \u{2028}"});
        let s = script_json(&v);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut v = vec![
            "layers.10.w",
            "layers.2.w",
            "layers.1.w",
            "a",
            "layers.02.w",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "a",
                "layers.1.w",
                "layers.2.w",
                "layers.02.w",
                "layers.10.w"
            ]
        );
    }

    #[test]
    fn escape_html_escapes_markup() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
