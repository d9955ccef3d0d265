//! The TorchScript reader against PyTorch: it must list exactly the keys
//! `torch.jit.load(p).state_dict()` lists (order, shapes, dtypes), with parameters and
//! buffers told apart and tied aliases marked, for the fixtures and every bench target.

use crate::trace_oracle::{bench, bench_target, fixtures, root, strings};
use serde_json::Value;
use std::path::Path;
use weightmap::read::torchscript;
use weightmap::Device;
use weightmap::{Format, TensorKind};

fn assert_state_dict(label: &str, path: &Path, expected: &Value) {
    let spec = torchscript::read(path).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(spec.format, Format::TorchScript);
    let listed: Vec<_> = spec.tensors.iter().filter(|t| t.persistent).collect();
    let python = expected["state_dict"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    let python_names: Vec<&str> = python.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, python_names, "{label}: state-dict keys and order");
    for (t, e) in listed.iter().zip(python) {
        let shape: Vec<i64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{label}: {} shape", t.name);
        assert_eq!(
            t.dtype,
            e["dtype"].as_str().unwrap(),
            "{label}: {} dtype",
            t.name
        );
        let kind = match e["kind"].as_str().unwrap() {
            "parameter" => TensorKind::Parameter,
            _ => TensorKind::Buffer,
        };
        assert_eq!(t.kind, kind, "{label}: {} kind", t.name);
        assert_eq!(
            t.tied_to.as_deref(),
            e["tied_to"].as_str(),
            "{label}: {} tied_to",
            t.name
        );
    }
    for (i, t) in spec.tensors.iter().enumerate() {
        assert_eq!(t.position, i, "{label}: positions are registration order");
    }
}

#[test]
fn reader_lists_the_state_dict_of_the_fixtures() {
    for (name, expected) in fixtures() {
        let path = root()
            .join("models")
            .join(expected["file"].as_str().unwrap());
        assert_state_dict(&name, &path, &expected);
    }
}

#[test]
fn reader_lists_the_state_dict_of_every_bench_target() {
    let Some(bench) = bench() else { return };
    for (case, expected) in bench {
        assert_state_dict(case, &bench_target(case), expected);
    }
}

/// Every TorchScript archive at hand (the fixtures and each corpus target): the header
/// reader, which never loads the module, lists exactly what libtorch's loader lists.
#[test]
fn header_reader_equals_the_loaded_module_on_every_archive() {
    let models = root().join("models");
    let mut files: Vec<std::path::PathBuf> = ["", "diff", "conversions/qkv_concat"]
        .iter()
        .flat_map(|d| std::fs::read_dir(models.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .chain(
            ["experts_unstack", "experts_stack_transposed"]
                .map(|c| models.join("conversions").join(c).join("target.pt")),
        )
        .filter(|p| p.extension().is_some_and(|x| x == "pt"))
        .filter(|p| weightmap::read::detect_format(p).ok() == Some(Format::TorchScript))
        .collect();
    if let Some(cases) = crate::support::corpus_cases() {
        files.extend(cases.iter().map(|c| c.join("target.pt")));
    }
    files.sort();
    assert!(files.len() > 5, "{files:?}");
    for path in &files {
        let header = torchscript::read_header(path).unwrap_or_else(|e| panic!("{e}"));
        let loaded = torchscript::read_loaded(path).unwrap();
        let view = |s: &weightmap::ModelSpec| -> Vec<String> {
            s.tensors
                .iter()
                .map(|t| {
                    format!(
                        "{} {:?} {} {:?} persistent={} tied_to={:?} @{}",
                        t.name, t.shape, t.dtype, t.kind, t.persistent, t.tied_to, t.position
                    )
                })
                .collect()
        };
        assert_eq!(view(&header), view(&loaded), "{}", path.display());
        assert!(header.tensors.iter().all(|t| t.location.is_some()));
    }
}

#[test]
fn tensor_attributes_outside_the_state_dict_are_listed_not_persistent() {
    let fixtures = fixtures();
    let expected = &fixtures["buffers"];
    let attributes = strings(&expected["tensor_attributes"]);
    assert!(
        !attributes.is_empty(),
        "the fixture holds a plain tensor attribute"
    );
    let spec = torchscript::read(&root().join("models/trace_buffers.pt")).unwrap();
    let extra: Vec<&str> = spec
        .tensors
        .iter()
        .filter(|t| !t.persistent)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(extra, attributes);
    // Non-persistent *buffers* are in TorchScript's state dict (it does not record the flag),
    // so they are listed as ordinary buffers, as torch.jit.load(p).state_dict() lists them.
    let gain = &spec.tensors[spec.find("scale.gain").unwrap()];
    assert_eq!((gain.kind, gain.persistent), (TensorKind::Buffer, true));
}

#[test]
fn module_hierarchy_includes_modules_without_tensors() {
    let module =
        weightmap::read::script_module(&root().join("models/trace_reorder.pt"), Device::Cpu)
            .unwrap();
    // body.2 is a ReLU: no tensors, still a module.
    assert_eq!(
        module.modules(),
        ["", "head", "body", "body.0", "body.1", "body.2", "stem"]
    );
}

#[test]
fn named_tensors_share_storage_with_the_module() {
    let module =
        weightmap::read::script_module(&root().join("models/trace_reorder.pt"), Device::Cpu)
            .unwrap();
    let spec = "1x3x8x8".parse::<weightmap::trace::InputSpec>().unwrap();
    let input = weightmap::libtorch::inputs::tensor(&spec, 7).unwrap();
    let before = module.forward(std::slice::from_ref(&input)).unwrap();
    assert_eq!(before.size(), [1, 5]);
    assert!(before.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
    let tensors = module.named_tensors();
    assert_eq!(tensors.len(), module.state_entries().len());
    tch::no_grad(|| {
        for (name, t) in &tensors {
            if name.starts_with("head.") {
                let _ = t.shallow_clone().fill_(0.25);
            }
        }
    });
    // head = Linear(16, 5) after a ReLU: every output is 0.25 * (sum of 16 activations) + 0.25,
    // so all five outputs are equal once the weights are set through the shared tensors.
    let after = module.forward(&[input]).unwrap();
    let first = after.double_value(&[0, 0]);
    for j in 1..5 {
        assert!(
            (after.double_value(&[0, j]) - first).abs() < 1e-5,
            "{after:?}"
        );
    }
    assert!((after - before).abs().max().double_value(&[]) > 0.0);
}

#[test]
fn a_file_that_is_not_torchscript_is_one_line_naming_it() {
    for bad in ["models/trace_expected.json", "Cargo.toml"] {
        let err = torchscript::read(&root().join(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains(bad) && !err.contains('\n'), "{err}");
    }
    let err = torchscript::read(&root().join("models/no_such.pt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such.pt"), "{err}");
    // A state dict saved with torch.save is not a model: say so, not "corrupt zip".
    if let Some(corpus) = crate::support::corpus() {
        let checkpoint = corpus.join("resnet_tv2timm/target_state.pth");
        let err = weightmap::read::script_module(&checkpoint, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target_state.pth") && err.contains("not a TorchScript archive"),
            "{err}"
        );
        assert!(
            err.contains("torch.jit.save") && !err.contains('\n'),
            "{err}"
        );
    }
}
