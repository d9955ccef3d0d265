//! The trace stage against PyTorch: weightmap's dynamic order must be the order PyTorch's own
//! profiler reports (and, on the fixtures, the order of forward pre-hooks on the eager model),
//! on the fixtures and on every bench target; the static order must agree without control
//! flow; failures must be one readable line.

use crate::support::weightmap;
use crate::trace_oracle::{bench, bench_target, canonical_names, fixtures, root, strings};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use weightmap::trace::{self, ExecutionOrder, InputSpec, OrderMode};
use weightmap::Device;

fn inputs(expected: &Value) -> Vec<InputSpec> {
    strings(&expected["inputs"])
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// (name, op) of the order, names resolved to the first name of tied tensors, restricted to
/// state-dict names (tensor attributes outside the state dict are not in PyTorch's list).
fn resolved(order: &ExecutionOrder, first: &HashMap<String, String>) -> Vec<(String, String)> {
    order
        .order
        .iter()
        .filter_map(|e| {
            Some((
                first.get(&e.name)?.clone(),
                e.op.clone().unwrap_or_default(),
            ))
        })
        .collect()
}

fn profiler_order(expected: &Value) -> Vec<(String, String)> {
    expected["profiler_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["op"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts that the dynamic order of `path` is the profiler's order, op for op, with the
/// same untouched tensors.
fn assert_matches_pytorch(label: &str, path: &Path, expected: &Value) -> ExecutionOrder {
    let order = trace::trace(path, &inputs(expected), Device::Cpu)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(order.mode, OrderMode::Dynamic);
    assert_eq!(order.device, "cpu");
    let first = canonical_names(&expected["state_dict"]);
    let ours = resolved(&order, &first);
    let theirs = profiler_order(expected);
    if ours != theirs {
        let at = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "{label}: dynamic order differs from PyTorch's at #{at}: ours {:?}, PyTorch {:?} ({} vs {} entries)",
            ours.get(at),
            theirs.get(at),
            ours.len(),
            theirs.len()
        );
    }
    let untouched: Vec<String> = order
        .untouched
        .iter()
        .filter(|n| first.contains_key(*n))
        .cloned()
        .collect();
    assert_eq!(
        untouched,
        strings(&expected["untouched"]),
        "{label}: untouched"
    );
    for (i, e) in order.order.iter().enumerate() {
        assert_eq!(e.index, i, "{label}: indices run from 0");
    }
    order
}

#[test]
fn dynamic_order_matches_pytorch_on_the_fixtures() {
    for (name, expected) in fixtures() {
        let path = root()
            .join("models")
            .join(expected["file"].as_str().unwrap());
        let order = assert_matches_pytorch(&name, &path, &expected);
        // The eager model's forward pre-hooks see the same order, module by module.
        let untouched = strings(&expected["untouched"]);
        let hooks: Vec<String> = strings(&expected["hook_order"])
            .into_iter()
            .filter(|n| !untouched.contains(n))
            .collect();
        let first = canonical_names(&expected["state_dict"]);
        let ours: Vec<String> = resolved(&order, &first)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(ours, hooks, "{name}: pre-hook order");
    }
}

#[test]
fn dynamic_order_matches_pytorch_on_every_bench_target() {
    let Some(bench) = bench() else { return };
    assert!(!bench.is_empty(), "no bench targets found");
    for (case, expected) in bench {
        assert_matches_pytorch(case, &bench_target(case), expected);
    }
}

/// Names and ops of an order, for comparing two orders of the same model.
fn names_ops(order: &ExecutionOrder) -> Vec<(String, Option<String>)> {
    order
        .order
        .iter()
        .map(|e| (e.name.clone(), e.op.clone()))
        .collect()
}

#[test]
fn static_order_agrees_with_dynamic_without_control_flow() {
    // Traced models have no control flow (tracing unrolls it); scripted ones do (BatchNorm's
    // `if self.training`, the branch fixture).
    let mut models: Vec<(String, std::path::PathBuf, Vec<InputSpec>)> = fixtures()
        .into_iter()
        .filter(|(_, e)| e["method"] == "trace")
        .map(|(name, e)| {
            (
                name,
                root().join("models").join(e["file"].as_str().unwrap()),
                inputs(&e),
            )
        })
        .collect();
    if let Some(bench) = bench() {
        models.extend(
            bench
                .iter()
                .map(|(case, e)| (case.clone(), bench_target(case), inputs(e))),
        );
    }
    for (label, path, specs) in models {
        let dynamic = trace::trace(&path, &specs, Device::Cpu).unwrap();
        let fixed = trace::static_order(&path).unwrap();
        assert_eq!(fixed.mode, OrderMode::Static);
        assert_eq!(
            names_ops(&fixed),
            names_ops(&dynamic),
            "{label}: static vs dynamic"
        );
        assert_eq!(fixed.untouched, dynamic.untouched, "{label}: untouched");
    }
}

#[test]
fn a_branch_not_taken_is_untouched_dynamically_but_ordered_statically() {
    let expected = &fixtures()["branch"];
    let path = root().join("models/trace_branch.pt");
    let dynamic = trace::trace(&path, &inputs(expected), Device::Cpu).unwrap();
    let skipped = strings(&expected["untouched"]);
    assert!(!skipped.is_empty(), "the fixture must skip a layer");
    assert_eq!(dynamic.untouched, skipped);
    assert!(skipped.iter().all(|n| dynamic.position(n).is_none()));

    let fixed = trace::static_order(&path).unwrap();
    assert!(
        fixed.untouched.is_empty(),
        "static order lists both sides of the branch: {:?}",
        fixed.untouched
    );
    let registration: Vec<String> = expected["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().into())
        .collect();
    let static_names: Vec<String> = fixed.order.iter().map(|e| e.name.clone()).collect();
    assert_eq!(
        static_names, registration,
        "graph order of early, wide, late"
    );
}

#[test]
fn tied_weights_appear_once_with_the_alias_listed() {
    let expected = &fixtures()["tied"];
    let path = root().join("models/trace_tied.pt");
    let order = trace::trace(&path, &inputs(expected), Device::Cpu).unwrap();
    let tied: Vec<(String, String)> = expected["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["tied_to"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(tied.len(), 1, "the fixture ties one pair");
    let (alias, first) = &tied[0];
    let names: Vec<&str> = order.order.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| *n == first || *n == alias).count(),
        1,
        "one entry for the pair: {names:?}"
    );
    let listed = order
        .also_used
        .iter()
        .find(|a| &a.name == alias)
        .expect("alias in also_used");
    assert_eq!(&listed.same_as, first);
    // The LM head's use of the shared weight is the second use: a matmul, not the lookup.
    assert_eq!(listed.op.as_deref(), Some("aten::linear"));
    assert_eq!(order.position(alias), order.position(first));
}

#[test]
fn cuda_without_cuda_is_a_clear_error() {
    let out = weightmap(&[
        "trace",
        "models/trace_reorder.pt",
        "--input",
        "1x3x8x8",
        "--device",
        "cuda",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if weightmap::libtorch::cuda_is_available() {
        // On a GPU machine the same command must work and give the CPU's order.
        assert!(out.status.success(), "{stderr}");
        let cuda = weightmap(&[
            "trace",
            "models/trace_reorder.pt",
            "--input",
            "1x3x8x8",
            "--device",
            "cuda",
            "--json",
        ]);
        let cpu = weightmap(&[
            "trace",
            "models/trace_reorder.pt",
            "--input",
            "1x3x8x8",
            "--json",
        ]);
        let parse = |o: &std::process::Output| serde_json::from_slice::<Value>(&o.stdout).unwrap();
        assert_eq!(parse(&cuda)["order"], parse(&cpu)["order"]);
        assert_eq!(parse(&cuda)["device"], "cuda:0");
        return;
    }
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial output");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("CUDA is not available")
            && stderr.contains("--device")
            && stderr.contains("use cpu"),
        "{stderr}"
    );
    // The library says the same, without loading anything.
    let err = trace::trace(
        &root().join("models/trace_reorder.pt"),
        &[],
        Device::Cuda(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CUDA is not available"), "{err}");
}

#[test]
fn a_wrong_input_shape_is_one_readable_line_and_the_library_falls_back_to_static() {
    let out = weightmap(&["trace", "models/trace_reorder.pt", "--input", "1x5"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("models/trace_reorder.pt") && stderr.contains("running forward"),
        "{stderr}"
    );
    assert!(
        stderr.contains("RuntimeError:") && !stderr.contains("Traceback"),
        "{stderr}"
    );

    let path = root().join("models/trace_reorder.pt");
    let wrong: InputSpec = "1x5".parse().unwrap();
    let order = trace::execution_order(&path, &[wrong], Device::Cpu).unwrap();
    assert_eq!(order.mode, OrderMode::Static);
    let note = order.note.clone().expect("the fallback says why");
    assert!(
        note.contains("dynamic trace failed")
            && note.contains("RuntimeError:")
            && !note.contains('\n'),
        "{note}"
    );
    assert_eq!(
        names_ops(&order),
        names_ops(&trace::static_order(&path).unwrap())
    );

    // No inputs at all: static without a note; good inputs: dynamic.
    let order = trace::execution_order(&path, &[], Device::Cpu).unwrap();
    assert_eq!((order.mode, order.note), (OrderMode::Static, None));
    let good: InputSpec = "1x3x8x8".parse().unwrap();
    assert_eq!(
        trace::execution_order(&path, &[good], Device::Cpu)
            .unwrap()
            .mode,
        OrderMode::Dynamic
    );
}

#[test]
fn cli_writes_one_json_object_and_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("order.json");
    let out = weightmap(&[
        "trace",
        "models/trace_branch.pt",
        "--input",
        "1x8",
        "-o",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let mut printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    // --json prints the file's content under the shared schema_version.
    let version = printed.as_object_mut().unwrap().remove("schema_version");
    assert!(version.is_some_and(|v| v.is_u64()));
    assert_eq!(written, printed);
    assert_eq!(written["mode"], "dynamic");
    assert_eq!(written["device"], "cpu");
    let expected = &fixtures()["branch"];
    assert_eq!(written["untouched"], expected["untouched"]);
    let first = &written["order"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["name"], expected["profiler_order"][0]["name"]);
    assert_eq!(first["op"], expected["profiler_order"][0]["op"]);
    assert_eq!(first["shape"], serde_json::json!([8, 8]));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");

    // -o alone: one summary line that says how to reuse the file, not the whole table.
    let saved = dir.path().join("again.json");
    let summary = weightmap(&[
        "trace",
        "models/trace_branch.pt",
        "--input",
        "1x8",
        "-o",
        saved.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(summary.status.success() && saved.is_file(), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(
        text.contains("dynamic order") && text.contains("--target-order"),
        "{text}"
    );

    // -o with --print: the file, and the whole table as well.
    let printed = dir.path().join("printed.json");
    let both = weightmap(&[
        "trace",
        "models/trace_branch.pt",
        "--input",
        "1x8",
        "-o",
        printed.to_str().unwrap(),
        "--print",
    ]);
    let text = String::from_utf8_lossy(&both.stdout);
    assert!(both.status.success() && printed.is_file(), "{text}");
    assert!(
        text.starts_with("dynamic order of models/trace_branch.pt on cpu")
            && text.contains("untouched (2):")
            && text.lines().count() > 4,
        "{text}"
    );

    let table = weightmap(&["trace", "models/trace_branch.pt", "--input", "1x8"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("dynamic order of models/trace_branch.pt on cpu"),
        "{text}"
    );
    let untouched_at = text.find("untouched (2):").expect("untouched section");
    assert!(
        text[untouched_at..].contains("wide.weight")
            && !text[..untouched_at].contains("wide.weight"),
        "{text}"
    );

    let fixed = weightmap(&["trace", "models/trace_branch.pt", "--static", "--json"]);
    let fixed: Value = serde_json::from_slice(&fixed.stdout).unwrap();
    assert_eq!(fixed["mode"], "static");
    assert_eq!(fixed["untouched"], serde_json::json!([]));
}

#[test]
fn a_file_that_is_not_torchscript_is_one_line_naming_it() {
    let out = weightmap(&["trace", "models/trace_expected.json", "--static"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("models/trace_expected.json"), "{stderr}");
    let missing = weightmap(&["trace", "models/no_such_model.pt"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no_such_model.pt"));
    let bad_input = weightmap(&["trace", "models/trace_branch.pt", "--input", "1xq"]);
    assert_eq!(bad_input.status.code(), Some(2), "bad flags exit 2");
}

/// The CUDA backend is loaded at run time, not linked (so CPU-only commands don't pay for
/// it): where the libtorch we built against ships libtorch_cuda.so, loading it must work,
/// or `--device cuda` would silently find no CUDA even on a GPU machine.
#[test]
fn the_cuda_backend_of_this_libtorch_loads() {
    let lib = root().join(".venv/libtorch/lib/libtorch_cuda.so");
    if !lib.exists() {
        return crate::support::missing(&format!("{} (a CPU-only libtorch)", lib.display()))
            .unwrap_or(());
    }
    weightmap::libtorch::load_cuda_backend().expect("libtorch_cuda.so loads through the rpath");
}

/// A buffer whose first use only views it (`table[index.view(-1)]`, Swin's relative
/// position bias) is recorded at the view, as PyTorch's inlined graph and its profiler
/// have it, not at the op that consumes the view.
#[test]
fn a_buffer_first_used_by_a_view_is_recorded_at_the_view() {
    let path = root().join("models/trace_views.pt");
    let specs = vec!["4x4".parse::<InputSpec>().unwrap()];
    let dynamic = trace::trace(&path, &specs, Device::Cpu).unwrap();
    let fixed = trace::static_order(&path).unwrap();
    assert_eq!(
        names_ops(&dynamic),
        names_ops(&fixed),
        "dynamic vs inlined graph"
    );
    let at = |name: &str| {
        dynamic
            .order
            .iter()
            .position(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not in the order"))
    };
    assert_eq!(
        dynamic.order[at("rel.index")].op.as_deref(),
        Some("aten::view")
    );
    assert!(at("rel.index") < at("bias.table"));
}
