//! The diff as one self-contained HTML page: the summary, then a table per category.

use super::{DiffResult, Entry};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(e: &Entry, side: char) -> String {
    let t = if side == 'a' { &e.a } else { &e.b };
    match t {
        Some(t) => format!(
            "<td><code>{}</code></td><td>{} {:?}</td>",
            escape(&t.original_name),
            escape(&t.dtype),
            t.shape
        ),
        None => "<td></td><td></td>".into(),
    }
}

fn figures(e: &Entry) -> String {
    let mut parts = vec![];
    if let Some(c) = &e.conversion {
        parts.push(escape(c));
    }
    if let Some(s) = &e.stats {
        parts.push(format!(
            "max abs diff {:.3e}, rel L2 {:.3e}, cosine {:.6}, {:.2}% differ{}",
            s.max_abs_diff,
            s.rel_l2,
            s.cosine,
            100.0 * s.frac_differ,
            if e.close { " (close)" } else { "" }
        ));
    }
    if let Some(by) = e.paired_by {
        parts.push(format!("paired by {}", by.name()));
    }
    parts.join("; ")
}

impl DiffResult {
    /// The diff as a self-contained HTML page (no scripts, no external resources).
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        out.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>weightmap diff</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}code{font-size:90%}</style></head><body>");
        out.push_str(&format!(
            "<h1>weightmap diff</h1><p>A: <code>{}</code><br>B: <code>{}</code></p><p id=\"summary\"><b>{}</b> — {}</p>",
            escape(&self.a),
            escape(&self.b),
            escape(&self.summary_line()),
            if self.same_weights() {
                "the same weights"
            } else {
                "different weights"
            }
        ));
        for (title, list) in [
            ("changed", &self.changed),
            ("converted", &self.converted),
            ("removed", &self.removed),
            ("added", &self.added),
            ("renamed", &self.renamed),
            ("identical", &self.identical),
        ] {
            out.push_str(&format!("<h2 id=\"{title}\">{title} ({})</h2>", list.len()));
            if list.is_empty() {
                continue;
            }
            out.push_str("<table><tr><th>A</th><th>dtype, shape</th><th>B</th><th>dtype, shape</th><th></th></tr>");
            for e in list {
                out.push_str(&format!(
                    "<tr>{}{}<td>{}</td></tr>",
                    cell(e, 'a'),
                    cell(e, 'b'),
                    figures(e)
                ));
            }
            out.push_str("</table>");
        }
        if !self.notes.is_empty() {
            out.push_str("<h2>notes</h2><ul>");
            for n in &self.notes {
                out.push_str(&format!("<li>{}</li>", escape(n)));
            }
            out.push_str("</ul>");
        }
        if let Some(g) = &self.graph {
            out.push_str(&format!(
                "<h2>forward graphs</h2><p>A: <code>{}</code><br>B: <code>{}</code></p>",
                escape(&g.signature_a),
                escape(&g.signature_b)
            ));
            out.push_str("<table><tr><th>op</th><th>A</th><th>B</th></tr>");
            for c in &g.op_changes {
                out.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    escape(&c.op),
                    c.a,
                    c.b
                ));
            }
            out.push_str(
                "</table><table><tr><th>moved in A</th><th>in B</th><th>place A → B</th></tr>",
            );
            for m in &g.moved {
                out.push_str(&format!(
                    "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{} → {}</td></tr>",
                    escape(&m.a),
                    escape(&m.b),
                    m.a_index,
                    m.b_index
                ));
            }
            out.push_str("</table>");
        }
        out.push_str("</body></html>\n");
        out
    }
}
