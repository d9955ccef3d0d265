//! The HTML report in a real browser: Debian's chromium, headless. Each page is opened as
//! `report.html#selftest`, which makes the page's own script expand every subtree, click
//! a match and write what it saw into `<pre id="wm-selftest">`; chromium's `--dump-dom`
//! gives back the DOM, and the test checks it independently too: a rendered row for
//! every target tensor (the embedded JSON alone does not count) and the clicked match's
//! breakdown in the details panel. A screenshot lands in target/test-artifacts/.
//!
//! chromium comes from scripts/setup.sh. Without it these tests fail, unless
//! `WEIGHTMAP_SKIP_BROWSER=1` says to skip them; `WEIGHTMAP_CHROMIUM` may name the binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{repo as root, s};

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// Writes the HTML report of `source` → `target` to `page` (`weightmap report ... -o`).
fn report_page(source: &Path, target: &Path, page: &Path) {
    weightmap(&["report", s(source), s(target), "-o", s(page)]);
}

/// The chromium binary, or None when the tests are told to skip; panics with what to
/// do when it is missing.
fn chromium() -> Option<PathBuf> {
    if std::env::var_os("WEIGHTMAP_SKIP_BROWSER").is_some_and(|v| v == "1") {
        return crate::support::missing("a browser: WEIGHTMAP_SKIP_BROWSER=1");
    }
    let candidates: Vec<PathBuf> = match std::env::var_os("WEIGHTMAP_CHROMIUM") {
        Some(p) => vec![PathBuf::from(p)],
        None => ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    for c in candidates {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    panic!(
        "no headless browser found (chromium): run scripts/setup.sh or `apt-get install -y chromium`, \
         name one with WEIGHTMAP_CHROMIUM, or set WEIGHTMAP_SKIP_BROWSER=1 to skip the browser tests"
    );
}

/// Runs headless chromium on `url` with the flags that work in this sandbox and a fresh
/// profile; `extra` adds `--dump-dom` or `--screenshot=...`. Returns stdout and the
/// page's console messages (errors of the page's script show there).
fn run_chromium(browser: &Path, url: &str, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Let the page's script run to the end before the DOM is dumped.
            "--virtual-time-budget=20000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let console: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        console.join("\n"),
    )
}

fn weightmap(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weightmap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What the page's self-test wrote.
fn selftest_result(dom: &str, console: &str) -> Value {
    const OPEN: &str = "<pre id=\"wm-selftest\">";
    let Some(start) = dom.rfind(OPEN) else {
        panic!("the page's self-test wrote no result; console:\n{console}");
    };
    let start = start + OPEN.len();
    let end = start + dom[start..].find("</pre>").unwrap();
    serde_json::from_str(&unescape(&dom[start..end])).expect("self-test JSON")
}

/// The target names a page embeds (its data element), as the report lists them.
fn target_names(html: &str) -> Vec<String> {
    let start = html
        .find("<script type=\"application/json\" id=\"wm-data\">")
        .unwrap();
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[start..end]).unwrap();
    data["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap().to_string())
        .collect()
}

/// Opens `page` with the self-test and checks what a reviewer needs: every target tensor
/// has a row in the target tree, and clicking a match shows its breakdown.
fn check_page(browser: &Path, page: &Path) -> Value {
    let html = std::fs::read_to_string(page).unwrap();
    let url = format!("file://{}#selftest", page.display());
    let (dom, console) = run_chromium(browser, &url, &["--dump-dom".into()]);
    let result = selftest_result(&dom, &console);
    assert_eq!(
        result["ok"], true,
        "self-test failed: {result}\nconsole:\n{console}"
    );
    assert!(
        result["search"].is_array() && result["filters"]["unmatched"].is_array(),
        "search and filters checked"
    );

    // Independently of the script's own verdict: rows in the target pane's DOM.
    let pane_start = dom.find("id=\"tgt-pane\"").expect("target pane");
    let pane_end = pane_start
        + dom[pane_start..]
            .find("id=\"details\"")
            .expect("details panel");
    let pane = &dom[pane_start..pane_end];
    let names = target_names(&html);
    assert!(!names.is_empty());
    for n in &names {
        assert!(
            pane.contains(&format!("data-name=\"{}\"", escape_attr(n))),
            "no row for target tensor {n:?}"
        );
    }
    let details = &dom[pane_end..];
    let expected = result["expected_target"].as_str().unwrap();
    assert!(
        details.contains(&escape_attr(expected)),
        "details show the clicked match's target {expected}"
    );
    assert!(
        details.contains("path (matched parents)") && details.contains("total"),
        "details show the breakdown"
    );
    result
}

fn screenshot(browser: &Path, page: &Path, name: &str) -> PathBuf {
    let png = artifacts().join(name);
    let _ = std::fs::remove_file(&png);
    let url = format!("file://{}#selftest", page.display());
    run_chromium(
        browser,
        &url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,900".into(),
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "a real PNG: {}",
        png.display()
    );
    png
}

#[test]
fn demo_report_lists_every_target_and_shows_a_breakdown_on_click() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    report_page(
        Path::new("models/demo_source.pth"),
        Path::new("models/demo_target.pt"),
        &page,
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no external resource of any kind.
    for needle in ["src=\"http", "href=\"http", "@import", "url(http", "<link"] {
        assert!(!html.contains(needle), "external resource {needle:?}");
    }
    let result = check_page(&browser, &page);
    assert_eq!(result["target_rows"], result["target_tensors"]);
    let png = screenshot(&browser, &page, "report.png");
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn report_from_a_saved_json_report_works_the_same() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let page = dir.path().join("from.html");
    weightmap(&[
        "map",
        "models/demo_source.pth",
        "models/demo_target.pt",
        "--report",
        json.to_str().unwrap(),
    ]);
    weightmap(&[
        "report",
        "--from",
        json.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    let result = check_page(&browser, &page);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        result["target_tensors"].as_u64().unwrap() as usize,
        report["counts"]["matched"].as_u64().unwrap() as usize
            + report["unmatched_target"].as_array().unwrap().len()
    );
}

/// Tensor names are data: markup in them must show as text and must not end the data
/// element or run as script.
#[test]
fn hostile_names_stay_text() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hostile = "blocks.0.</script><script>document.title='pwned'</script><b>x.weight";
    let spec = |names: &[(&str, &[i64])]| {
        let tensors: Vec<Value> = names
            .iter()
            .map(|(n, s)| serde_json::json!({"name": n, "shape": s, "dtype": "float32"}))
            .collect();
        serde_json::json!({"format": "spec_json", "tensors": tensors}).to_string()
    };
    let source = dir.path().join("source.json");
    let target = dir.path().join("target.json");
    std::fs::write(
        &source,
        spec(&[("blocks.0.fc.weight", &[4, 8]), ("blocks.0.fc.bias", &[4])]),
    )
    .unwrap();
    std::fs::write(
        &target,
        spec(&[
            (hostile, &[4, 8]),
            ("blocks.0.fc.bias", &[4]),
            ("extra.&amp;<i>.bias", &[3]),
        ]),
    )
    .unwrap();
    let page = dir.path().join("hostile.html");
    report_page(&source, &target, &page);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("</script>").count(),
        2,
        "only the page's own two script elements close"
    );
    let result = check_page(&browser, &page);
    assert_eq!(result["target_tensors"], 3);
    let (dom, _) = run_chromium(
        &browser,
        &format!("file://{}", page.display()),
        &["--dump-dom".into()],
    );
    assert!(
        !dom.contains("<title>pwned</title>"),
        "no script from a name ran"
    );
}

/// The 4,403-tensor bench case: the page opens with few rows (collapsed subtrees are not
/// in the DOM) and, fully expanded, still lists every target tensor.
#[test]
fn large_bench_case_renders_lazily_and_completely() {
    let Some(corpus) = crate::support::corpus() else {
        return;
    };
    let case = corpus.join("moe_large_synthetic");
    assert!(
        case.is_dir(),
        "{} is missing from the corpus",
        case.display()
    );
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("large.html");
    let (s, t) = (case.join("source.pth"), case.join("target.pt"));
    report_page(&s, &t, &page);
    let names = target_names(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(names.len(), 4403);
    let (first, _) = run_chromium(
        &browser,
        &format!("file://{}", page.display()),
        &["--dump-dom".into()],
    );
    let rows = first.matches("class=\"row ").count();
    assert!(
        rows > 0 && rows < 1000,
        "initial view renders a few rows, not all 8,806 ({rows})"
    );
    let result = check_page(&browser, &page);
    assert_eq!(result["target_rows"], 4403);
    screenshot(&browser, &page, "report_large.png");
}

/// The page's filters give the numbers the terminal summary and `map --json` give, with
/// the same definitions (marks partition the mappings: an ambiguous transpose is
/// ambiguous), on corpus cases with transposes, ambiguities and unmatched tensors.
#[test]
fn filter_counts_are_the_terminals_and_the_jsons() {
    let Some(browser) = chromium() else { return };
    let Some(cases) = crate::support::corpus_cases() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in cases {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
        if meta["source"]["num_tensors"].as_u64().unwrap_or(u64::MAX) > 500 {
            continue;
        }
        let (src, tgt) = (
            case.join("source.safetensors"),
            case.join("target_state.pth"),
        );
        let (src, tgt) = (src.to_str().unwrap(), tgt.to_str().unwrap());
        let out = crate::support::weightmap(&["map", src, tgt, "--json"]);
        assert!(out.status.success());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mappings = report["mappings"].as_array().unwrap();
        let ambiguous = mappings
            .iter()
            .filter(|m| !m["ambiguous"].is_null())
            .count();
        let transformed = mappings
            .iter()
            .filter(|m| !m["transform"].is_null() && m["ambiguous"].is_null())
            .count();
        let (us, ut) = (
            report["counts"]["unmatched_source"].as_u64().unwrap(),
            report["counts"]["unmatched_target"].as_u64().unwrap(),
        );
        assert_eq!(
            ambiguous as u64,
            report["counts"]["ambiguous"].as_u64().unwrap()
        );
        let review = report["counts"]["needs_review"].as_u64().unwrap();
        // The terminal's summary says the same.
        let text = crate::support::weightmap(&["map", src, tgt]);
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(
            text.contains(&format!("unmatched  {us} source, {ut} target")),
            "{text}"
        );
        assert!(text.contains(&format!("; {review} need review;")), "{text}");

        let page = dir.path().join(format!("{checked}.html"));
        report_page(Path::new(src), Path::new(tgt), &page);
        let result = check_page(&browser, &page);
        let labels = &result["filter_labels"];
        assert_eq!(
            labels["unmatched"],
            format!("Unmatched ({us} source, {ut} target)")
        );
        assert_eq!(labels["ambiguous"], format!("Ambiguous ({ambiguous})"));
        assert_eq!(
            labels["transformed"],
            format!("Transformed ({transformed})")
        );
        checked += 1;
    }
    assert!(checked > 0, "no corpus case small enough");
}

/// Split, concat and stack relations are drawn: one dashed line per (source, target) of
/// each conversion `map --json` reports, on the conversion fixtures.
#[test]
fn conversions_are_drawn_one_line_per_source_and_target() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("models/conversions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("target.pt").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no conversion fixtures");
    for (k, case) in cases.iter().enumerate() {
        let (src, tgt) = (case.join("source.safetensors"), case.join("target.pt"));
        let (src, tgt) = (src.to_str().unwrap(), tgt.to_str().unwrap());
        let out = crate::support::weightmap(&["map", src, tgt, "--json"]);
        assert!(out.status.success());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let members: usize = report["conversions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["sources"].as_array().unwrap().len() * c["targets"].as_array().unwrap().len()
            })
            .sum();
        assert!(members > 0, "{}: no conversion found", case.display());
        let page = dir.path().join(format!("conv{k}.html"));
        report_page(Path::new(src), Path::new(tgt), &page);
        let result = check_page(&browser, &page);
        assert_eq!(
            result["conversion_lines"].as_u64(),
            Some(members as u64),
            "{}: {result}",
            case.display()
        );
        assert!(std::fs::read_to_string(&page)
            .unwrap()
            .contains("split / concat / stack"));
    }
}

/// Long unmatched lists show as patterns (`8× blocks.{0..7}.gate.weight`) that open to
/// list every tensor they stand for; the self-test opens them all and checks the names.
#[test]
fn unmatched_lists_collapse_into_patterns_that_open() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = crate::patterns::repeated_unmatched_specs(dir.path());
    let page = dir.path().join("patterns.html");
    report_page(&source, &target, &page);
    let result = check_page(&browser, &page);
    assert_eq!(result["unmatched_expected"], 16, "{result}");
    assert_eq!(result["unmatched_listed"], 16, "{result}");
    assert_eq!(result["unmatched_lines"], 2, "{result}");
    screenshot(&browser, &page, "report_patterns.png");
}
