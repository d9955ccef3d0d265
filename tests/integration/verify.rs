//! `weightmap verify` against real PyTorch: its MISSING list and pass/fail agree with what
//! `load_state_dict(strict=False)` reports in Python, and its output comparison catches a
//! wrong mapping that loads without complaint.
//!
//! Needs the Python oracle in `.venv` (scripts/setup.sh) and, for the corpus test, the
//! benchmark corpus at `../shared/bench`; each test says so and returns when they are absent.

use serde_json::Value;

use crate::support::{python, run_python, s, weightmap};

/// Runs `weightmap verify --json`; returns the exit status and the report.
fn verify_json(args: &[&str]) -> (bool, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let r = weightmap(&all);
    let report: Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "verify {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&r.stderr)
        )
    });
    assert_eq!(
        r.status.success(),
        report["pass"].as_bool().unwrap(),
        "exit status and report disagree: {report}"
    );
    (r.status.success(), report)
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// For one corpus case: writes the ground-truth mapping, and prints as JSON the dummy
/// input as `--input` text, the target keys `load_state_dict(strict=False)` reports
/// missing for the mapped checkpoint, and which of them are parameters.
const CASE_ORACLE: &str = r#"
import json, sys, torch
case_dir, mapping_out, checkpoint = sys.argv[1:4]
case = json.load(open(case_dir + "/case.json"))
tpose = {t["source"][0] for t in case["transforms"] if t["kind"] == "transpose"}
m = {s: ({"target": t, "transform": "transpose"} if s in tpose else t) for s, t in case["ground_truth"].items()}
conversions = [dict({k: v for k, v in t.items() if k not in ("source", "target", "note")},
                    sources=t["source"], targets=t["target"])
               for t in case["transforms"] if t["kind"] != "transpose"]
json.dump({"format": "weightmap.mapping", "version": 2, "mapping": m, "conversions": conversions},
          open(mapping_out, "w"))
ts = torch.jit.load(case_dir + "/target.pt")
inputs = []
for d in case["dummy_input"]:
    text = "x".join(str(x) for x in d["shape"])
    if d["dtype"] != "float32":
        text += ":" + d["dtype"]
        if "value_range" in d:
            text += ":%d-%d" % tuple(d["value_range"])
    inputs.append(text)
print(json.dumps({"inputs": inputs, "mapping": m}))
"#;

const LOAD_ORACLE: &str = r#"
import json, sys, torch
from safetensors.torch import load_file
ts = torch.jit.load(sys.argv[1])
r = ts.load_state_dict(load_file(sys.argv[2]), strict=False)
params = {n for n, _ in ts.named_parameters()}
print(json.dumps({"missing": sorted(r.missing_keys), "unexpected": sorted(r.unexpected_keys),
                  "missing_parameters": sorted(k for k in r.missing_keys if k in params)}))
"#;

#[test]
fn corpus_reports_agree_with_load_state_dict() {
    let Some(py) = python() else { return };
    let Some(cases) = crate::support::corpus_cases() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let mapping = dir.path().join(format!("{name}.json"));
        let out = dir.path().join(format!("{name}.safetensors"));
        let oracle: Value = serde_json::from_str(&run_python(
            &py,
            CASE_ORACLE,
            &[s(case), s(&mapping), s(&out)],
        ))
        .unwrap();
        let r = weightmap(&[
            "apply",
            s(&case.join("source.safetensors")),
            "-m",
            s(&mapping),
            "-o",
            s(&out),
        ]);
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let load: Value = serde_json::from_str(&run_python(
            &py,
            LOAD_ORACLE,
            &[s(&case.join("target.pt")), s(&out)],
        ))
        .unwrap();
        let target = case.join("target.pt");
        let mut args = vec![s(&out), s(&target)];
        for i in oracle["inputs"].as_array().unwrap() {
            args.push("--input");
            args.push(i.as_str().unwrap());
        }

        // Default check: loads, runs, same MISSING as Python, nothing unexpected.
        let (pass, report) = verify_json(&args);
        assert!(pass, "{name}: {report}");
        // load_state_dict's missing keys are MISSING, or COMPUTED (buffers the model
        // computes itself, not expected in a checkpoint).
        let computed: Vec<String> = serde_json::from_value(report["computed"].clone()).unwrap();
        let expected: Vec<String> = serde_json::from_value(load["missing"].clone()).unwrap();
        assert!(
            computed.iter().all(|c| expected.contains(c)),
            "{name}: COMPUTED {computed:?} not missing in load_state_dict {expected:?}"
        );
        let expected: Vec<String> = expected
            .into_iter()
            .filter(|e| !computed.contains(e))
            .collect();
        assert_eq!(
            names(&report["missing"]),
            expected,
            "{name}: MISSING differs from load_state_dict"
        );
        assert_eq!(
            report["unexpected"].as_array().unwrap().len(),
            load["unexpected"].as_array().unwrap().len(),
            "{name}"
        );
        assert_eq!(report["mismatched"], Value::Array(vec![]), "{name}");
        let transposes = oracle["mapping"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v.is_object())
            .count();
        assert_eq!(
            report["transformed"].as_array().unwrap().len(),
            transposes,
            "{name}: TRANSFORMED"
        );

        // The corpus' io.pt holds the correctly converted target's output: the reference
        // check agrees.
        let io = case.join("io.pt");
        let (pass, report) = verify_json(&[s(&out), s(&target), "--reference", s(&io)]);
        assert!(pass, "{name}: --reference: {}", report["reference"]);

        // --strict fails exactly when Python finds parameters left at their initial values,
        // and passes once those are allowed to be new.
        let missing_params: Vec<String> =
            serde_json::from_value(load["missing_parameters"].clone()).unwrap();
        let mut strict = args.clone();
        strict.push("--strict");
        let (pass, report) = verify_json(&strict);
        assert_eq!(
            pass,
            missing_params.is_empty(),
            "{name}: --strict: {}",
            report["failures"]
        );
        if !missing_params.is_empty() {
            for p in &missing_params {
                strict.push("--allow-new");
                strict.push(p);
            }
            let (pass, report) = verify_json(&strict);
            assert!(
                pass,
                "{name}: --strict with --allow-new: {}",
                report["failures"]
            );
        }
        eprintln!(
            "{name}: ok ({} missing, {} missing parameters)",
            expected.len(),
            missing_params.len()
        );
        std::fs::remove_file(&out).unwrap();
    }
}

/// A source model and a renamed target computing the same function (the target's linear
/// layer stores its weight transposed, as GPT-2's Conv1D does), both traced.
const MAKE_PAIR: &str = r#"
import sys, json, torch, collections
d = sys.argv[1]
torch.manual_seed(0)
class Source(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 5)
    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
class Target(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(collections.OrderedDict(conv=torch.nn.Conv2d(3, 4, 3), norm=torch.nn.BatchNorm2d(4)))
        self.head_weight = torch.nn.Parameter(torch.randn(4, 5))  # [in, out]
        self.head_bias = torch.nn.Parameter(torch.randn(5))
    def forward(self, x):
        return torch.relu(self.stem(x)).mean((2, 3)) @ self.head_weight + self.head_bias
src = Source().eval()
with torch.no_grad():
    for p in src.bn.parameters(): p.uniform_(0.5, 1.5)
    src.bn.running_mean.uniform_(-1, 1); src.bn.running_var.uniform_(0.5, 2)
x = torch.randn(1, 3, 8, 8)
torch.jit.trace(src, x).save(d + "/source.pt")
torch.jit.trace(Target().eval(), x).save(d + "/target.pt")
torch.save(src.state_dict(), d + "/source.pth")
m = {"conv.weight": "stem.conv.weight", "conv.bias": "stem.conv.bias", "bn.weight": "stem.norm.weight",
     "bn.bias": "stem.norm.bias", "bn.running_mean": "stem.norm.running_mean", "bn.running_var": "stem.norm.running_var",
     "bn.num_batches_tracked": "stem.norm.num_batches_tracked",
     "fc.weight": {"target": "head_weight", "transform": "transpose"}, "fc.bias": "head_bias"}
json.dump(m, open(d + "/good.json", "w"))
bad = dict(m); bad["bn.weight"], bad["bn.bias"] = "stem.norm.bias", "stem.norm.weight"
json.dump(bad, open(d + "/swapped.json", "w"))
"#;

#[test]
fn source_model_comparison_passes_a_right_mapping_and_catches_a_wrong_one() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, MAKE_PAIR, &[s(d)]);
    for (mapping, out) in [
        ("good.json", "good.safetensors"),
        ("swapped.json", "swapped.safetensors"),
        ("good.json", "good.pth"),
    ] {
        let r = weightmap(&[
            "apply",
            s(&d.join("source.pth")),
            "-m",
            s(&d.join(mapping)),
            "-o",
            s(&d.join(out)),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let (target, source) = (d.join("target.pt"), d.join("source.pt"));
    for out in ["good.safetensors", "good.pth"] {
        let (pass, report) = verify_json(&[
            s(&d.join(out)),
            s(&target),
            "--source-model",
            s(&source),
            "--input",
            "2x3x8x8",
            "--strict",
        ]);
        assert!(pass, "{out}: {report}");
        let c = &report["comparison"];
        assert!(
            c["max_abs_diff"].as_f64().unwrap() < 1e-5 && c["cosine"].as_f64().unwrap() > 0.99999,
            "{c}"
        );
        assert_eq!(report["output_shape"], serde_json::json!([2, 5]));
    }
    // Every tensor loads (same shapes), but the outputs tell the swap.
    let (pass, report) = verify_json(&[
        s(&d.join("swapped.safetensors")),
        s(&target),
        "--source-model",
        s(&source),
        "--input",
        "2x3x8x8",
    ]);
    assert!(!pass, "{report}");
    assert_eq!(report["loaded"], 9);
    assert!(
        report["failures"][0]
            .as_str()
            .unwrap()
            .contains("outputs differ"),
        "{report}"
    );
    // The same, loading the original weights into the source model explicitly.
    let (pass, _) = verify_json(&[
        s(&d.join("good.pth")),
        s(&target),
        "--source-model",
        s(&source),
        "--source-checkpoint",
        s(&d.join("source.pth")),
        "--input",
        "1x3x8x8",
    ]);
    assert!(pass);
    // Without --input the image input is worked out from the first convolution.
    let (pass, report) = verify_json(&[
        s(&d.join("good.safetensors")),
        s(&target),
        "--source-model",
        s(&source),
    ]);
    assert!(pass, "{report}");
    assert_eq!(report["inputs"], serde_json::json!(["1x3x224x224"]));
    // The text report names the sections and exits 3 when the check fails (1 and 2 are
    // "could not run").
    let r = weightmap(&[
        "verify",
        s(&d.join("swapped.safetensors")),
        s(&target),
        "--source-model",
        s(&source),
    ]);
    assert_eq!(r.status.code(), Some(3));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("DIFFER") && text.contains("FAIL"), "{text}");
    // A missing checkpoint could not be verified at all: not the same status.
    let r = weightmap(&["verify", s(&d.join("no-such-file.safetensors")), s(&target)]);
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn mismatched_and_unexpected_tensors_are_reported() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, MAKE_PAIR, &[s(d)]);
    let make = r#"
import sys, torch
from safetensors.torch import save_file
save_file({"stem.conv.weight": torch.zeros(4, 3, 5, 5), "stem.conv.bias": torch.zeros(4, dtype=torch.float64),
           "stray.weight": torch.zeros(2)}, sys.argv[1])
"#;
    let ckpt = d.join("bad.safetensors");
    run_python(&py, make, &[s(&ckpt)]);
    let (pass, report) = verify_json(&[s(&ckpt), s(&d.join("target.pt")), "--input", "1x3x8x8"]);
    assert!(!pass);
    assert_eq!(report["unexpected"], serde_json::json!(["stray.weight"]));
    let mismatched = report["mismatched"].as_array().unwrap();
    assert_eq!(mismatched.len(), 2, "{report}");
    let weight = mismatched
        .iter()
        .find(|m| m["name"] == "stem.conv.weight")
        .unwrap();
    assert_eq!(weight["loaded_with_cast"], false);
    assert_eq!(weight["target_shape"], serde_json::json!([4, 3, 3, 3]));
    let bias = mismatched
        .iter()
        .find(|m| m["name"] == "stem.conv.bias")
        .unwrap();
    assert_eq!(bias["loaded_with_cast"], true);
    assert_eq!(report["loaded"], 1);
    assert!(!names(&report["missing"]).contains(&"stem.conv.weight".to_string()));
    assert!(names(&report["missing"]).contains(&"head_weight".to_string()));
}

/// A source with a square linear weight and a renamed target returning a tuple, traced;
/// `io.pt` holds inputs and the right outputs (as the corpus' io.pt), `io_list.pt` the
/// tuple's tensors as a list; the right mapping, and one that transposes the square weight
/// (it loads without complaint, strict included); and reference files that are wrong in
/// each way a user can get one wrong.
const MAKE_REFERENCE_PAIR: &str = r#"
import sys, json, torch
d = sys.argv[1]
torch.manual_seed(0)
class Source(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(6, 8)
        self.square = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 3)
    def forward(self, x):
        return self.out(torch.tanh(self.square(torch.tanh(self.inp(x)))))
class Target(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(6, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 3)
    def forward(self, x):
        h = torch.tanh(self.mix(torch.tanh(self.embed(x))))
        return self.head(h), h
src = Source().eval()
x = torch.randn(4, 6)
torch.save(src.state_dict(), d + "/source.pth")
tgt = Target().eval()
torch.jit.trace(tgt, x).save(d + "/target.pt")
m = {"inp.weight": "embed.weight", "inp.bias": "embed.bias", "square.weight": "mix.weight",
     "square.bias": "mix.bias", "out.weight": "head.weight", "out.bias": "head.bias"}
json.dump(m, open(d + "/good.json", "w"))
bad = dict(m); bad["square.weight"] = {"target": "mix.weight", "transform": "transpose"}
json.dump(bad, open(d + "/transposed.json", "w"))
tgt.load_state_dict({m[k]: v for k, v in src.state_dict().items()})
with torch.no_grad():
    y, h = tgt(x)
torch.save({"inputs": [x], "reference_output": y}, d + "/io.pt")
torch.save({"inputs": [x], "reference_output": [y, h]}, d + "/io_list.pt")
near = {k: v.clone() for k, v in tgt.state_dict().items()}
near["head.bias"] += 1e-3  # every output element off by 1e-3 exactly
torch.save(near, d + "/perturbed.pth")
torch.save({"inputs": [x]}, d + "/no_output.pt")
torch.save([x, y], d + "/not_a_dict.pt")
torch.save({"inputs": [x, x], "reference_output": y}, d + "/two_inputs.pt")
torch.save({"inputs": [x], "reference_output": "y"}, d + "/output_not_tensor.pt")
torch.save({"inputs": [x], "reference_output": [y, h, h]}, d + "/three_outputs.pt")
data = open(d + "/io.pt", "rb").read()
open(d + "/truncated.pt", "wb").write(data[: len(data) // 2])
open(d + "/text.pt", "w").write("not a checkpoint")
"#;

#[test]
fn reference_check_fails_a_transposed_square_weight_and_passes_the_right_one() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, MAKE_REFERENCE_PAIR, &[s(d)]);
    for name in ["good", "transposed"] {
        let r = weightmap(&[
            "apply",
            s(&d.join("source.pth")),
            "-m",
            s(&d.join(format!("{name}.json"))),
            "-o",
            s(&d.join(format!("{name}.safetensors"))),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let target = d.join("target.pt");
    let (good, transposed) = (d.join("good.safetensors"), d.join("transposed.safetensors"));
    for io in ["io.pt", "io_list.pt"] {
        let reference = d.join(io);
        // The right checkpoint agrees with the reference on every output.
        let (pass, report) = verify_json(&[
            s(&good),
            s(&target),
            "--strict",
            "--reference",
            s(&reference),
        ]);
        assert!(pass, "{io}: {report}");
        let outputs = report["reference"]["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), if io == "io.pt" { 1 } else { 2 }, "{report}");
        for o in outputs {
            assert!(o["max_abs_diff"].as_f64().unwrap() < 1e-6, "{o}");
            assert!(o["cosine"].as_f64().unwrap() > 0.999999, "{o}");
        }
        assert_eq!(report["inputs"], serde_json::json!(["4x6:Float"]));

        // The transposed square weight loads (even under --strict) but the numbers differ:
        // exit 3, with the difference printed.
        let r = weightmap(&[
            "verify",
            s(&transposed),
            s(&target),
            "--strict",
            "--reference",
            s(&reference),
        ]);
        let text = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.status.code(), Some(3), "{io}: {text}");
        assert!(
            text.contains("DIFFER") && text.contains("max abs diff") && text.contains("cosine"),
            "{text}"
        );
        assert!(
            text.contains("output 0 differs from the reference"),
            "{text}"
        );
        let (pass, report) =
            verify_json(&[s(&transposed), s(&target), "--reference", s(&reference)]);
        assert!(!pass);
        assert_eq!(report["reference"]["pass"], false, "{report}");
        assert_eq!(report["missing"], serde_json::json!([]), "{report}");
    }
    // A tolerance wide enough lets the transposed weight through: the tolerance is used.
    let (pass, report) = verify_json(&[
        s(&transposed),
        s(&target),
        "--reference",
        s(&d.join("io.pt")),
        "--tolerance",
        "1000",
    ]);
    assert!(pass, "{report}");
}

#[test]
fn reference_tolerances_are_torch_allclose_atol_and_rtol() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, MAKE_REFERENCE_PAIR, &[s(d)]);
    let (perturbed, target, io) = (
        d.join("perturbed.pth"),
        d.join("target.pt"),
        d.join("io.pt"),
    );
    let check = |flags: &[&str]| {
        let mut args = vec!["verify", s(&perturbed), s(&target), "--reference", s(&io)];
        args.extend_from_slice(flags);
        weightmap(&args)
    };
    // Off by 1e-3 everywhere: within an absolute 2e-3, or a relative 1000 x |reference|.
    for loose in [
        &["--atol", "2e-3", "--rtol", "0"][..],
        &["--atol", "0", "--rtol", "1000"],
    ] {
        let r = check(loose);
        let text = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.status.code(), Some(0), "{loose:?}: {text}");
        assert!(text.contains("match"), "{text}");
    }
    // Not within 5e-4 absolute (relative 0), nor within the default 1e-4 + 1e-4 x |ref|.
    for tight in [&["--atol", "5e-4", "--rtol", "0"][..], &[]] {
        let r = check(tight);
        let text = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.status.code(), Some(3), "{tight:?}: {text}");
        assert!(
            text.contains("output 0 differs from the reference"),
            "{text}"
        );
    }
    // The report says which tolerances were used.
    let (pass, report) = verify_json(&[
        s(&perturbed),
        s(&target),
        "--reference",
        s(&io),
        "--atol",
        "5e-4",
    ]);
    assert!(!pass);
    let r = &report["reference"];
    assert_eq!(
        (r["atol"].as_f64(), r["rtol"].as_f64()),
        (Some(5e-4), Some(weightmap::verify::DEFAULT_TOLERANCE)),
        "{r}"
    );
    let diff = r["outputs"][0]["max_abs_diff"].as_f64().unwrap();
    assert!((diff - 1e-3).abs() < 1e-5, "{r}");
    // A negative tolerance is a usage error.
    assert_eq!(check(&["--rtol", "-1"]).status.code(), Some(2));
}

#[test]
fn a_bad_reference_file_is_an_error_naming_it() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(&py, MAKE_REFERENCE_PAIR, &[s(d)]);
    let good = d.join("good.safetensors");
    let r = weightmap(&[
        "apply",
        s(&d.join("source.pth")),
        "-m",
        s(&d.join("good.json")),
        "-o",
        s(&good),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for (file, says) in [
        ("no_output.pt", "reference_output"),
        ("not_a_dict.pt", "not a dict"),
        ("two_inputs.pt", "2 input(s)"),
        ("output_not_tensor.pt", "not a tensor"),
        ("three_outputs.pt", "3 outputs"),
        ("truncated.pt", "truncated.pt"),
        ("text.pt", "not a readable torch.save file"),
        ("no_such_file.pt", "no_such_file.pt"),
    ] {
        let reference = d.join(file);
        let r = weightmap(&[
            "verify",
            s(&good),
            s(&d.join("target.pt")),
            "--reference",
            s(&reference),
        ]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(s(&reference)), "{file}: {err}");
        assert!(err.contains(says), "{file}: {err}");
        assert!(r.stdout.is_empty(), "{file}: no report on an error");
    }
    // --reference brings its own inputs: --input with it is a usage error.
    let r = weightmap(&[
        "verify",
        s(&good),
        s(&d.join("target.pt")),
        "--reference",
        s(&d.join("io.pt")),
        "--input",
        "4x6",
    ]);
    assert_eq!(r.status.code(), Some(2));
}
