//! `weightmap apply` against real PyTorch: the written files are read back with
//! `torch.load(weights_only=True)` / `safetensors`, compared with the source tensors, and
//! loaded into the corpus targets.
//!
//! Needs the Python oracle in `.venv` (scripts/setup.sh) and, for the corpus test, the
//! benchmark corpus at `../shared/bench`; each test says so and returns when they are absent.

use std::path::{Path, PathBuf};

use crate::support::{corpus, python, run_python, s, weightmap};

/// Writes the ground-truth mapping of a corpus case (transposes flagged) to `out`.
const WRITE_MAPPING: &str = r#"
import json, sys
case = json.load(open(sys.argv[1]))
tpose = {t["source"][0] for t in case["transforms"] if t["kind"] == "transpose"}
m = {s: ({"target": t, "transform": "transpose"} if s in tpose else t) for s, t in case["ground_truth"].items()}
json.dump(m, open(sys.argv[2], "w"))
"#;

/// Checks written files of one corpus case; prints one line per file.
const CHECK_CASE: &str = r#"
import json, sys, os, torch
from safetensors.torch import load_file
case_dir = sys.argv[1]
case = json.load(open(os.path.join(case_dir, "case.json")))
src = torch.load(os.path.join(case_dir, "source.pth"), weights_only=True)
tpose = {t["source"][0] for t in case["transforms"] if t["kind"] == "transpose"}
gt = case["ground_truth"]
one_to_one = not any(t["kind"] != "transpose" for t in case["transforms"])
io = torch.load(os.path.join(case_dir, "io.pt"), weights_only=True)
for f in sys.argv[2:]:
    sd = load_file(f) if f.endswith(".safetensors") else torch.load(f, weights_only=True)
    assert set(sd) == set(gt.values()), (f, sorted(set(sd) ^ set(gt.values()))[:5])
    for s, t in gt.items():
        want = src[s].t() if s in tpose else src[s]
        assert sd[t].dtype == want.dtype and torch.equal(sd[t], want), (f, s, t)
    ts = torch.jit.load(os.path.join(case_dir, "target.pt"))
    expected_missing = set(ts.state_dict()) - set(gt.values())
    r = ts.load_state_dict(sd, strict=False)
    assert set(r.missing_keys) == expected_missing, (f, sorted(set(r.missing_keys) ^ expected_missing)[:5])
    assert not r.unexpected_keys, (f, r.unexpected_keys[:5])
    diff = None
    if one_to_one:
        with torch.no_grad():
            out = ts(*io["inputs"])
        if isinstance(out, dict):
            out = out.get("logits", next(iter(out.values())))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        diff = (out - io["reference_output"]).abs().max().item()
        assert torch.allclose(out, io["reference_output"], atol=1e-5, rtol=1e-5), (f, diff)
    print(os.path.basename(f), "ok", len(sd), "missing", len(expected_missing), "diff", diff)
"#;

#[test]
fn corpus_ground_truth_round_trips_through_torch() {
    let (Some(py), Some(cases)) = (python(), crate::support::corpus_cases()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let mapping = dir.path().join(format!("{name}.json"));
        run_python(
            &py,
            WRITE_MAPPING,
            &[s(&case.join("case.json")), s(&mapping)],
        );
        let mut outputs = vec![];
        for source in ["source.pth", "source.safetensors"] {
            for ext in ["safetensors", "pth"] {
                let out = dir.path().join(format!("{name}-{source}.{ext}"));
                let r = weightmap(&[
                    "apply",
                    s(&case.join(source)),
                    "--mapping",
                    s(&mapping),
                    "-o",
                    s(&out),
                ]);
                assert!(
                    r.status.success(),
                    "{name} {source} -> {ext}: {}",
                    String::from_utf8_lossy(&r.stderr)
                );
                let summary = String::from_utf8_lossy(&r.stdout);
                assert!(summary.contains("renamed"), "{summary}");
                outputs.push(out);
            }
        }
        let mut args = vec![s(case)];
        args.extend(outputs.iter().map(|p| s(p)));
        let report = run_python(&py, CHECK_CASE, &args);
        eprintln!("{name}:\n{report}");
        assert_eq!(
            report.lines().filter(|l| l.contains(" ok ")).count(),
            4,
            "{report}"
        );
        for o in outputs {
            std::fs::remove_file(o).unwrap();
        }
    }
}

/// Makes a Lightning-style checkpoint: the state dict under "state_dict" (keys prefixed
/// "model."), optimizer states holding tensors, hyper-parameters, callbacks, loops.
const MAKE_LIGHTNING: &str = r#"
import sys, torch, collections
torch.manual_seed(0)
net = torch.nn.Sequential(collections.OrderedDict(
    conv=torch.nn.Conv2d(3, 4, 3), bn=torch.nn.BatchNorm2d(4), fc=torch.nn.Linear(4, 2)))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
out = net.fc(net.bn(net.conv(torch.randn(2, 3, 5, 5))).mean((2, 3)))
out.sum().backward()
opt.step()
sd = collections.OrderedDict(("model." + k, v) for k, v in net.state_dict().items())
sd["model.fc.weight_t"] = net.fc.weight.detach().t()  # a strided view, saved as such
ckpt = {
    "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
    "state_dict": sd,
    "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 3}}}},
    "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25), "best_model_path": "/x/epoch=2.ckpt"}},
    "optimizer_states": [opt.state_dict()],
    "lr_schedulers": [],
    "hyper_parameters": {"lr": 1e-3, "layers": [3, 4, 2], "name": "net"},
}
torch.save(ckpt, sys.argv[1])
"#;

/// Compares a rewritten Lightning checkpoint with the original: every entry but the
/// state dict equal, the state dict renamed with equal values.
const CHECK_LIGHTNING: &str = r#"
import sys, json, torch
a = torch.load(sys.argv[1], weights_only=True)
b = torch.load(sys.argv[2], weights_only=True)
mapping = json.load(open(sys.argv[3]))
def eq(x, y):
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and list(x) == list(y) and all(eq(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) == type(y) and len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y))
    return x == y
assert list(a) == list(b), (list(a), list(b))
for k in a:
    if k != "state_dict":
        assert eq(a[k], b[k]), k
renamed = [mapping.get(k, k) for k in a["state_dict"]]
assert list(b["state_dict"]) == renamed, (list(b["state_dict"]), renamed)
for k, v in a["state_dict"].items():
    assert eq(v, b["state_dict"][mapping.get(k, k)]), k
print("ok", len(renamed))
"#;

#[test]
fn lightning_checkpoint_keeps_everything_but_the_renamed_keys() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    run_python(&py, MAKE_LIGHTNING, &[s(&ckpt)]);
    let mapping = dir.path().join("m.json");
    let m = serde_json::json!({
        "model.conv.weight": "backbone.stem.weight",
        "model.conv.bias": "backbone.stem.bias",
        "model.bn.weight": "backbone.norm.weight",
        "model.fc.weight": "head.weight",
    });
    std::fs::write(&mapping, m.to_string()).unwrap();
    let out = dir.path().join("renamed.ckpt");
    let r = weightmap(&["apply", s(&ckpt), "--mapping", s(&mapping), "-o", s(&out)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report = run_python(&py, CHECK_LIGHTNING, &[s(&ckpt), s(&out), s(&mapping)]);
    assert!(report.starts_with("ok"), "{report}");

    // The same checkpoint to safetensors: only the state dict, strided view made contiguous.
    let st = dir.path().join("renamed.safetensors");
    let r = weightmap(&[
        "apply",
        s(&ckpt),
        "--mapping",
        s(&mapping),
        "-o",
        s(&st),
        "--keep-unmapped",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let check = r#"
import sys, json, torch
from safetensors.torch import load_file
a = torch.load(sys.argv[1], weights_only=True)["state_dict"]
b = load_file(sys.argv[2])
m = json.load(open(sys.argv[3]))
assert len(a) == len(b)
for k, v in a.items():
    assert torch.equal(v, b[m.get(k, k)]), k
print("ok")
"#;
    assert!(run_python(&py, check, &[s(&ckpt), s(&st), s(&mapping)]).starts_with("ok"));
}

/// Makes small safetensors and torch.save sources for transform and failure tests.
const MAKE_SMALL: &str = r#"
import sys, torch
from safetensors.torch import save_file
torch.manual_seed(0)
sd = {"proj.weight": torch.randn(8, 4, 1, 1), "proj.bias": torch.randn(8),
      "c_attn.weight": torch.randn(4, 6), "ln.weight": torch.randn(4).to(torch.bfloat16),
      "steps": torch.tensor(7)}
save_file(sd, sys.argv[1])
sd2 = dict(sd)
sd2["view.weight"] = torch.randn(6, 4).t()  # non-contiguous
sd2["slice.weight"] = torch.randn(10, 4)[2:5]  # offset into a larger storage
sd2["empty"] = torch.zeros(0, 4)
torch.save(sd2, sys.argv[2])
"#;

#[test]
fn transforms_reshape_transpose_and_strided_views_are_applied() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (st, pth) = (
        dir.path().join("small.safetensors"),
        dir.path().join("small.pth"),
    );
    run_python(&py, MAKE_SMALL, &[s(&st), s(&pth)]);
    let mapping = dir.path().join("m.json");
    std::fs::write(
        &mapping,
        serde_json::json!({"mapping": {
            "proj.weight": {"target": "fc.weight", "transform": {"reshape": [8, -1]}},
            "c_attn.weight": {"target": "attn.weight", "transform": "transpose"},
            "ln.weight": "norm.weight",
        }})
        .to_string(),
    )
    .unwrap();
    let check = r#"
import sys, torch
from safetensors.torch import load_file
src = torch.load(sys.argv[1], weights_only=True)
for f in sys.argv[2:]:
    sd = load_file(f) if f.endswith(".safetensors") else torch.load(f, weights_only=True)
    assert torch.equal(sd["fc.weight"], src["proj.weight"].reshape(8, 4)), f
    assert torch.equal(sd["attn.weight"], src["c_attn.weight"].t()), f
    assert sd["norm.weight"].dtype == torch.bfloat16 and torch.equal(sd["norm.weight"], src["ln.weight"]), f
    if "view.weight" in sd:
        assert torch.equal(sd["view.weight"], src["view.weight"]) and torch.equal(sd["slice.weight"], src["slice.weight"]), f
        assert torch.equal(sd["steps"], src["steps"]) and sd["steps"].shape == (), f
        assert sd["empty"].shape == (0, 4), f
    print(f, "ok", len(sd))
"#;
    let mut outs = vec![];
    for (src, tag) in [(&st, "st"), (&pth, "pth")] {
        for ext in ["safetensors", "pth"] {
            let out = dir.path().join(format!("{tag}-out.{ext}"));
            let mut args = vec!["apply", s(src), "-m", s(&mapping), "-o", s(&out)];
            if tag == "pth" {
                args.push("--keep-unmapped");
            }
            let r = weightmap(&args);
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
            let stdout = String::from_utf8_lossy(&r.stdout).to_string();
            assert!(stdout.contains("transformed  2"), "{stdout}");
            if tag == "pth" {
                assert!(stdout.contains("kept         5"), "{stdout}");
            } else {
                assert!(stdout.contains("dropped      2"), "{stdout}");
            }
            outs.push(out);
        }
    }
    let mut args = vec![s(&pth)];
    args.extend(outs.iter().map(|p| s(p)));
    let report = run_python(&py, check, &args);
    assert_eq!(
        report.lines().filter(|l| l.contains(" ok ")).count(),
        4,
        "{report}"
    );
}

/// Files in `dir` other than `keep`.
fn leftovers(dir: &Path, keep: &[&Path]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.iter().any(|k| k == p))
        .collect()
}

fn assert_fails(args: &[&str], needle: &str) {
    let r = weightmap(args);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "expected failure for {args:?}");
    assert!(
        stderr.contains(needle),
        "stderr of {args:?} lacks '{needle}':\n{stderr}"
    );
}

#[test]
fn bad_requests_fail_clearly_and_write_nothing() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (st, pth) = (
        dir.path().join("small.safetensors"),
        dir.path().join("small.pth"),
    );
    run_python(&py, MAKE_SMALL, &[s(&st), s(&pth)]);
    let write = |name: &str, v: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let good = write("good.json", serde_json::json!({"proj.bias": "fc.bias"}));
    let unknown = write("unknown.json", serde_json::json!({"proj.bais": "fc.bias"}));
    let bad_transpose = write(
        "t.json",
        serde_json::json!({"proj.weight": {"target": "fc.weight", "transform": "transpose"}}),
    );
    let bad_reshape = write(
        "r.json",
        serde_json::json!({"proj.weight": {"target": "fc.weight", "transform": {"reshape": [5, 5]}}}),
    );
    let dup = write(
        "dup.json",
        serde_json::json!({"proj.bias": "x", "ln.weight": "x"}),
    );
    // A target whose fc.bias has another shape: a shape mismatch.
    let target = dir.path().join("target.safetensors");
    run_python(&py, "import sys,torch\nfrom safetensors.torch import save_file\nsave_file({'fc.bias': torch.zeros(9)}, sys.argv[1])", &[s(&target)]);
    let fixed: Vec<PathBuf> = leftovers(dir.path(), &[]);
    let keep: Vec<&Path> = fixed.iter().map(|p| p.as_path()).collect();
    let out = dir.path().join("out.safetensors");

    assert_fails(
        &["apply", s(&st), "-m", s(&unknown), "-o", s(&out)],
        "did you mean 'proj.bias'",
    );
    assert_fails(
        &["apply", s(&st), "-m", s(&bad_transpose), "-o", s(&out)],
        "transpose needs a 2-D tensor",
    );
    assert_fails(
        &["apply", s(&st), "-m", s(&bad_reshape), "-o", s(&out)],
        "does not fit",
    );
    assert_fails(
        &["apply", s(&st), "-m", s(&dup), "-o", s(&out)],
        "both map to 'x'",
    );
    assert_fails(
        &[
            "apply",
            s(&st),
            "-m",
            s(&good),
            "-t",
            s(&target),
            "-o",
            s(&out),
        ],
        "target expects [9]",
    );
    assert_fails(
        &["apply", s(&st), "-m", s(&good), "-o", s(&st), "--force"],
        "is the input",
    );
    assert_fails(
        &[
            "apply",
            s(&pth),
            "-m",
            s(&good),
            "-o",
            s(&pth),
            "--force",
            "--format",
            "pth",
        ],
        "is the input",
    );
    assert_fails(
        &[
            "apply",
            s(&st),
            "-m",
            s(&good),
            "-o",
            s(&dir.path().join("out.txt")),
        ],
        "cannot tell the format",
    );
    assert_eq!(
        leftovers(dir.path(), &keep),
        Vec::<PathBuf>::new(),
        "a failed apply left files behind"
    );

    // An existing output is kept unless --force.
    let r = weightmap(&["apply", s(&st), "-m", s(&good), "-o", s(&out)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let first = std::fs::read(&out).unwrap();
    assert_fails(
        &[
            "apply",
            s(&st),
            "-m",
            s(&bad_reshape),
            "-o",
            s(&out),
            "--force",
        ],
        "does not fit",
    );
    assert_fails(
        &["apply", s(&st), "-m", s(&good), "-o", s(&out)],
        "pass --force",
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "a failed apply changed an existing output"
    );
    let r = weightmap(&["apply", s(&st), "-m", s(&good), "-o", s(&out), "--force"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // A folder the process cannot write to: a chmod'ed folder, or (as root, who ignores
    // permissions) sysfs, where no file can be created.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ro_out = if std::fs::File::create(ro.join("probe")).is_err() {
        ro.join("out.safetensors")
    } else {
        std::fs::remove_file(ro.join("probe")).unwrap();
        PathBuf::from("/sys/weightmap-test-out.safetensors")
    };
    assert_fails(
        &["apply", s(&st), "-m", s(&good), "-o", s(&ro_out)],
        ro_out.parent().unwrap().to_str().unwrap(),
    );
    assert!(!ro_out.exists());
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn target_alone_computes_the_mapping_with_the_engine() {
    let (Some(py), Some(corpus)) = (python(), corpus()) else {
        return;
    };
    // Same names on both sides: whatever the engine's finer points, every key must map.
    let case = corpus.join("resnet_tv2timm");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pth");
    let r = weightmap(&[
        "apply",
        s(&case.join("source.safetensors")),
        "--target",
        s(&case.join("target.pt")),
        "-o",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let check = r#"
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
ts = torch.jit.load(sys.argv[2])
ts.load_state_dict(sd, strict=True)
print("ok", len(sd))
"#;
    assert!(run_python(&py, check, &[s(&out), s(&case.join("target.pt"))]).starts_with("ok"));
}
