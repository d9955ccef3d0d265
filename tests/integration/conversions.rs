//! Conversions end to end, against real PyTorch: `map SOURCE TARGET.pt -o m.json` writes
//! the split / concat / stack / stack_of_concat ops (and their inverses), `apply` executes
//! them to safetensors and to torch.save output, and PyTorch checks that the written file
//! holds every tensor the conversions write, with the values the ops give, nothing
//! unexpected, and that the target with it loaded reproduces the reference output;
//! `verify --strict` passes and lists the converted tensors.
//!
//! Cases: every corpus case (`../shared/bench`) whose ground truth has a conversion, and
//! the reverse-direction fixtures of `models/conversions/`
//! (scripts/make_conversion_fixtures.py). Needs the Python oracle in `.venv` and the corpus;
//! fails with a message when either is missing.

use std::path::{Path, PathBuf};

use crate::support::{repo, run_python, s, weightmap};

/// Kinds of the corpus' `transforms` that a one-to-one entry cannot express.
const CONVERSION_KINDS: [&str; 6] = [
    "split",
    "concat",
    "stack",
    "unstack",
    "stack_of_concat",
    "split_of_unstack",
];

/// Checks written files of one case: argv = case dir, files. Prints one line per file.
const CHECK: &str = r#"
import json, sys, os, torch
from safetensors.torch import load_file
case_dir = sys.argv[1]
case = json.load(open(os.path.join(case_dir, "case.json")))
src = torch.load(os.path.join(case_dir, "source.pth"), weights_only=True)
io = torch.load(os.path.join(case_dir, "io.pt"), weights_only=True)
ts0 = torch.jit.load(os.path.join(case_dir, "target.pt"))
target_keys = set(ts0.state_dict())

def oracle(tr):
    # The ops as PyTorch writes them (bench/score.py's oracle, with the inverses).
    xs = [src[s] for s in tr["source"]]
    k = tr["kind"]
    if k == "split":
        return list(torch.split(xs[0], tr["sizes"], dim=tr["dim"]))
    if k == "concat":
        return [torch.cat(xs, dim=tr["dim"])]
    if k == "stack":
        return [torch.stack(xs, dim=tr["dim"])]
    if k == "unstack":
        return list(torch.unbind(xs[0], dim=tr["dim"]))
    if k == "stack_of_concat":
        g = tr["group_size"]
        return [torch.stack([torch.cat(xs[i:i + g], dim=tr["concat_dim"]) for i in range(0, len(xs), g)], dim=tr.get("dim", 0))]
    if k.endswith("_t"):  # the same op with each part transposed first
        xs = [x.t() for x in xs]
        k = k[:-2]
    if k == "split":
        return list(torch.split(xs[0], tr["sizes"], dim=tr["dim"]))
    if k == "stack":
        return [torch.stack(xs, dim=tr["dim"])]
    if k == "stack_of_concat":
        g = tr["group_size"]
        return [torch.stack([torch.cat(xs[i:i + g], dim=tr["concat_dim"]) for i in range(0, len(xs), g)], dim=tr.get("dim", 0))]
    if k == "split_of_unstack":
        return [p for e in torch.unbind(xs[0], dim=tr["dim"]) for p in torch.split(e, tr["sizes"], dim=tr["concat_dim"])]
    raise ValueError(k)

for f in sys.argv[2:]:
    sd = load_file(f) if f.endswith(".safetensors") else torch.load(f, weights_only=True)
    unexpected = set(sd) - target_keys
    assert not unexpected, (f, "unexpected", sorted(unexpected)[:5])
    converted = 0
    for tr in case["transforms"]:
        if tr["kind"] == "transpose":
            continue
        for t, v in zip(tr["target"], oracle(tr)):
            assert t in sd, (f, "missing converted tensor", t)
            assert sd[t].dtype == v.dtype and torch.equal(sd[t], v.contiguous()), (f, "wrong values", t)
            converted += 1
    ts = torch.jit.load(os.path.join(case_dir, "target.pt"))
    ts.load_state_dict(sd, strict=False)
    with torch.no_grad():
        out = ts(*io["inputs"])
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    elif isinstance(out, (tuple, list)):
        out = out[0]
    ref = io["reference_output"]
    diff = (out - ref).abs().max().item()
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (f, "output differs", diff)
    print(os.path.basename(f), "ok", len(sd), "converted", converted, "diff", diff)
"#;

/// The cases to run: corpus cases with a conversion in their ground truth, then the
/// reverse-direction fixtures.
fn cases() -> Vec<PathBuf> {
    let corpus = repo().join("../shared/bench/corpus");
    assert!(
        corpus.is_dir(),
        "the benchmark corpus is missing at {}: these tests need it",
        corpus.display()
    );
    let mut out = vec![];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    for d in dirs {
        let case: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("case.json")).unwrap()).unwrap();
        let has = case["transforms"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| CONVERSION_KINDS.contains(&t["kind"].as_str().unwrap_or("")))
        });
        if has {
            out.push(d);
        }
    }
    assert!(
        !out.is_empty(),
        "no corpus case has a conversion in its ground truth"
    );
    let fixtures = repo().join("models/conversions");
    for name in ["qkv_concat", "experts_unstack", "experts_stack_transposed"] {
        let d = fixtures.join(name);
        assert!(
            d.join("case.json").exists(),
            "fixture {} is missing: run .venv/bin/python scripts/make_conversion_fixtures.py",
            d.display()
        );
        out.push(d);
    }
    out
}

/// `--input` specs of a case's `dummy_input` (`1x3x32x32`, `1x48:i64:0-128`).
fn dummy_inputs(case: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
    v["dummy_input"]
        .as_array()
        .expect("case.json has no dummy_input")
        .iter()
        .map(|d| {
            let shape: Vec<String> = d["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect();
            let mut spec = shape.join("x");
            if d["dtype"] == "int64" {
                let r = &d["value_range"];
                spec += &format!(":i64:{}-{}", r[0], r[1]);
            }
            spec
        })
        .collect()
}

fn python() -> PathBuf {
    crate::support::python()
        .expect("the Python oracle (.venv/bin/python) is missing: run scripts/setup.sh")
}

fn ok(r: &std::process::Output, what: &str) -> String {
    assert!(
        r.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).to_string()
}

#[test]
fn conversions_map_apply_and_reproduce_the_reference_output() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let mut outputs = vec![];
        let inputs = dummy_inputs(&case);
        for source in ["source.pth", "source.safetensors"] {
            let mapping = dir.path().join(format!("{name}-{source}.json"));
            ok(
                &weightmap(&[
                    "map",
                    s(&case.join(source)),
                    s(&case.join("target.pt")),
                    "-o",
                    s(&mapping),
                    "--quiet",
                ]),
                &format!("{name}: map {source}"),
            );
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&mapping).unwrap()).unwrap();
            assert_eq!(m["format"], "weightmap.mapping", "{name}");
            assert_eq!(m["version"], 2, "{name}");
            let conversions = m["conversions"].as_array().unwrap();
            assert!(!conversions.is_empty(), "{name} {source}: no conversion");
            for c in conversions {
                assert!(c["confidence"].as_f64().is_some(), "{c}");
                assert!(!c["reason"].as_str().unwrap_or("").is_empty(), "{c}");
            }
            for ext in ["safetensors", "pth"] {
                let out = dir.path().join(format!("{name}-{source}.{ext}"));
                let summary = ok(
                    &weightmap(&[
                        "apply",
                        s(&case.join(source)),
                        "--mapping",
                        s(&mapping),
                        "-o",
                        s(&out),
                    ]),
                    &format!("{name}: apply {source} -> {ext}"),
                );
                assert!(summary.contains("converted"), "{summary}");
                let target = case.join("target.pt");
                let mut verify = vec!["verify", s(&out), s(&target), "--strict"];
                for i in &inputs {
                    verify.extend(["--input", i.as_str()]);
                }
                let report = ok(
                    &weightmap(&verify),
                    &format!("{name}: verify --strict {source} -> {ext}"),
                );
                assert!(report.contains("PASS"), "{report}");
                if ext == "safetensors" {
                    assert!(report.contains("CONVERTED ("), "{report}");
                }
                assert!(!report.contains("MISSING ("), "{name}: {report}");
                outputs.push(out);
            }
        }
        let mut args = vec![s(&case)];
        args.extend(outputs.iter().map(|p| s(p)));
        let report = run_python(&py, CHECK, &args);
        eprintln!("{name}:\n{report}");
        assert_eq!(
            report.lines().filter(|l| l.contains(" ok ")).count(),
            4,
            "{report}"
        );
    }
}

/// Writes a source with tensors made for conversion errors: argv = folder.
const MAKE_PARTS: &str = r#"
import sys, torch, os
from safetensors.torch import save_file
d = sys.argv[1]
sd = {"a.weight": torch.randn(4, 3), "b.weight": torch.randn(4, 3), "c.weight": torch.randn(4, 3).half(),
      "d.weight": torch.randn(5, 3), "qkv.weight": torch.randn(12, 3)}
torch.save(sd, os.path.join(d, "parts.pth"))
save_file(sd, os.path.join(d, "parts.safetensors"))
torch.save({"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3}, os.path.join(d, "parts.ckpt"))
"#;

fn write_mapping(dir: &Path, name: &str, conversions: serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    let v = serde_json::json!({"format": "weightmap.mapping", "version": 2, "mapping": {},
                               "conversions": conversions});
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    p
}

#[test]
fn disagreeing_parts_and_lightning_checkpoints_are_clear_errors() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    run_python(&py, MAKE_PARTS, &[s(dir.path())]);
    let cases = [
        (
            serde_json::json!([{"kind": "stack", "sources": ["a.weight", "c.weight"], "targets": ["ab"], "dim": 0}]),
            vec!["'a.weight' is float32", "'c.weight' is float16"],
        ),
        (
            serde_json::json!([{"kind": "stack", "sources": ["a.weight", "d.weight"], "targets": ["ad"]}]),
            vec!["[5, 3]", "'d.weight'"],
        ),
        (
            serde_json::json!([{"kind": "split", "sources": ["qkv.weight"], "targets": ["q", "k"], "dim": 0, "sizes": [4, 4]}]),
            vec!["do not add up to 12", "'qkv.weight'"],
        ),
        (
            serde_json::json!([{"kind": "shuffle", "sources": ["a.weight"], "targets": ["x"]}]),
            vec!["shuffle", "split, concat, stack"],
        ),
    ];
    for (i, (conversions, wanted)) in cases.into_iter().enumerate() {
        let mapping = write_mapping(dir.path(), &format!("bad{i}.json"), conversions);
        for src in ["parts.pth", "parts.safetensors"] {
            let out = dir.path().join(format!("out{i}.safetensors"));
            let r = weightmap(&[
                "apply",
                s(&dir.path().join(src)),
                "--mapping",
                s(&mapping),
                "-o",
                s(&out),
            ]);
            let err = String::from_utf8_lossy(&r.stderr);
            assert!(!r.status.success(), "case {i} {src}: should fail");
            for w in &wanted {
                assert!(err.contains(w), "case {i} {src}: '{w}' not in: {err}");
            }
            assert!(!out.exists(), "case {i}: a partial output was left");
        }
    }
    // Lightning .ckpt -> .ckpt keeps everything else in place: conversions cannot.
    let mapping = write_mapping(
        dir.path(),
        "concat.json",
        serde_json::json!([{"kind": "concat", "sources": ["a.weight", "b.weight"], "targets": ["ab.weight"], "dim": 0}]),
    );
    let out = dir.path().join("out.ckpt");
    let r = weightmap(&[
        "apply",
        s(&dir.path().join("parts.ckpt")),
        "--mapping",
        s(&mapping),
        "-o",
        s(&out),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains(".safetensors"), "{err}");
    assert!(!out.exists());
    // ... and to safetensors it works.
    let out = dir.path().join("out.safetensors");
    ok(
        &weightmap(&[
            "apply",
            s(&dir.path().join("parts.ckpt")),
            "--mapping",
            s(&mapping),
            "-o",
            s(&out),
        ]),
        "ckpt -> safetensors",
    );
    let check = r#"
import sys, torch
from safetensors.torch import load_file
sd = load_file(sys.argv[1]); src = torch.load(sys.argv[2], weights_only=True)["state_dict"]
assert list(sd) == ["ab.weight"], list(sd)
assert torch.equal(sd["ab.weight"], torch.cat([src["model.a.weight"], src["model.b.weight"]]))
print("ok")
"#;
    run_python(&py, check, &[s(&out), s(&dir.path().join("parts.ckpt"))]);
}
