//! The read stage against what PyTorch itself reports (models/expected.json, written by
//! scripts/make_fixtures.py), against the benchmark corpus, and against bad inputs.

use crate::support::s;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use weightmap::format::pickle;
use weightmap::format::torch_zip;
use weightmap::spec::{DataLocation, ModelSpec};
use weightmap::{read_model, Error, ReadOptions};

use crate::support::repo as root;

fn models() -> PathBuf {
    root().join("models")
}

fn expected() -> Value {
    let path = models().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/setup.sh (it runs scripts/make_fixtures.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn read(path: &Path, key: Option<&str>, keep_prefixes: bool) -> weightmap::Result<ModelSpec> {
    read_model(
        path,
        &ReadOptions {
            state_dict_key: key.map(str::to_string),
            keep_prefixes,
        },
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Compares one fixture with PyTorch's report: names as written, order, shapes, dtypes,
/// tied weights, storage offsets and strides, the state dict chosen and the prefixes.
fn check_fixture(name: &str, e: &Value) {
    let path = models().join(name);
    let kept = read(&path, None, true).unwrap_or_else(|err| panic!("{name}: {err}"));
    let want = e["tensors"].as_array().unwrap();
    let names: Vec<&str> = kept.tensors.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "{name}: names and order");
    assert_eq!(kept.format.name(), e["format"], "{name}: format");
    assert_eq!(
        kept.state_dict_key.as_deref(),
        e["state_dict_key"].as_str(),
        "{name}: state dict key"
    );
    assert_eq!(
        kept.alternatives,
        strings(&e["alternatives"]),
        "{name}: alternatives"
    );
    for (t, w) in kept.tensors.iter().zip(want) {
        let shape: Vec<i64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{name}: {} shape", t.name);
        assert_eq!(t.dtype, w["dtype"], "{name}: {} dtype", t.name);
        assert_eq!(
            t.tied_to.as_deref(),
            w["tied_to"].as_str(),
            "{name}: {} tied_to",
            t.name
        );
        if let Some(k) = w.get("kind") {
            assert_eq!(
                serde_json::to_value(t.kind).unwrap(),
                *k,
                "{name}: {} kind",
                t.name
            );
        }
        if let Some(DataLocation::TorchStorage { offset, stride, .. }) = &t.location {
            assert_eq!(
                *offset,
                w["offset"].as_u64().unwrap(),
                "{name}: {} offset",
                t.name
            );
            let want_stride: Vec<i64> = w["stride"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            assert_eq!(*stride, want_stride, "{name}: {} stride", t.name);
        }
    }
    let stripped = read(&path, None, false).unwrap();
    let prefixes = strings(&e["stripped_prefixes"]);
    assert_eq!(
        stripped.stripped_prefixes, prefixes,
        "{name}: stripped prefixes"
    );
    let joined: String = prefixes.concat();
    for (t, w) in stripped.tensors.iter().zip(want) {
        let original = w["name"].as_str().unwrap();
        assert_eq!(t.original_name, original, "{name}: original name kept");
        assert_eq!(
            t.name,
            original.strip_prefix(joined.as_str()).unwrap_or(original),
            "{name}: prefix stripped"
        );
    }
}

fn fixtures_of(kind: &str) -> Vec<(String, Value)> {
    let e = expected();
    let all = e["fixtures"].as_object().unwrap();
    let out: Vec<_> = all
        .iter()
        .filter(|(_, v)| (v["format"] == "torchscript") == (kind == "torchscript"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!out.is_empty(), "no {kind} fixtures in expected.json");
    out
}

#[test]
fn checkpoints_and_safetensors_agree_with_pytorch() {
    for (name, e) in fixtures_of("checkpoints") {
        check_fixture(&name, &e);
    }
}

/// TorchScript is read from the archive's pickle and class headers, libtorch or not.
#[test]
fn torchscript_fixtures_agree_with_pytorch() {
    for (name, e) in fixtures_of("torchscript") {
        check_fixture(&name, &e);
    }
}

#[test]
fn nested_state_dict_is_chosen_and_others_can_be_picked() {
    let path = models().join("nested.pth");
    let spec = read(&path, None, false).unwrap();
    assert_eq!(spec.state_dict_key.as_deref(), Some("model"));
    assert_eq!(spec.alternatives, ["ema"]);
    let ema = read(&path, Some("ema"), false).unwrap();
    assert_eq!(ema.state_dict_key.as_deref(), Some("ema"));
    assert_eq!(ema.alternatives, ["model"]);
    let names = |s: &ModelSpec| s.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ema), names(&spec));
    // The EMA tensors are other storages than the model's.
    let key = |s: &ModelSpec| match &s.tensors[0].location {
        Some(DataLocation::TorchStorage { key, .. }) => key.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(key(&ema), key(&spec));
    match read(&path, Some("optimizer"), false) {
        Err(Error::MissingKey { key, hint, .. }) => {
            assert_eq!(key, "optimizer");
            assert!(hint.contains("model") && hint.contains("ema"), "{hint}");
        }
        other => panic!("expected a missing-key error, got {other:?}"),
    }
}

#[test]
fn lightning_checkpoint_state_dict_and_prefix() {
    let spec = read(&models().join("lightning.ckpt"), None, false).unwrap();
    assert_eq!(spec.state_dict_key.as_deref(), Some("state_dict"));
    assert_eq!(spec.stripped_prefixes, ["model."]);
    assert!(spec
        .tensors
        .iter()
        .all(|t| t.original_name == format!("model.{}", t.name)));
    // Callback metric dicts and optimizer moments are not offered as state dicts.
    assert!(spec.alternatives.is_empty(), "{:?}", spec.alternatives);
}

#[test]
fn archive_layout_for_the_apply_stage() {
    let path = models().join("tied.pth");
    let a = torch_zip::open(&path, None).unwrap();
    assert_eq!(a.layout.prefix, "tied");
    assert_eq!(a.layout.entry_name("data.pkl"), "tied/data.pkl");
    assert_eq!(a.byteorder.as_deref(), Some("little"));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut pkl = Vec::new();
    zip.by_name("tied/data.pkl")
        .unwrap()
        .read_to_end(&mut pkl)
        .unwrap();
    assert_eq!(a.data_pkl, pkl);
    for t in &a.tensors {
        let span = t.key_span.clone().unwrap();
        // The span is a string opcode whose payload is the key.
        assert!(
            a.data_pkl[span.clone()].ends_with(t.key.as_bytes()),
            "{}",
            t.key
        );
        let record = a.layout.record(&t.tensor.storage.key).unwrap();
        assert!(record.size >= torch_zip::required_bytes(&t.tensor).unwrap());
        let entry = &a.layout.entries[record.entry];
        assert_eq!(
            entry.name,
            a.layout.entry_name(&format!("data/{}", record.key))
        );
        assert!(entry.stored);
        // The central directory's CRC-32 is that of the record's bytes, read independently.
        let file = std::fs::read(&a.path).unwrap();
        let bytes = &file[entry.data_start as usize..(entry.data_start + entry.size) as usize];
        assert_eq!(entry.crc32, crc32fast::hash(bytes), "{}", entry.name);
    }
    let tied: Vec<_> = a.tensors.iter().filter(|t| t.tied_to.is_some()).collect();
    assert_eq!(tied.len(), 1);
    assert_eq!(a.tensors[tied[0].tied_to.unwrap()].key, "embed.weight");
}

#[test]
fn mixed_dtypes_views_and_skipped_entries() {
    let a = torch_zip::open(&models().join("mixed_dtypes.pth"), None).unwrap();
    assert_eq!(a.skipped, ["block._extra_state"]);
    let codes = a.tensors.iter().find(|t| t.key == "codes").unwrap();
    // uint16 goes through _rebuild_tensor_v3 over an untyped (byte) storage.
    assert_eq!(codes.tensor.storage.storage_type, "UntypedStorage");
    assert_eq!(codes.tensor.dtype, "uint16");
    let param = a.tensors.iter().find(|t| t.key == "param").unwrap();
    assert!(param.tensor.parameter);
}

/// Copies a torch.save zip with a new data.pkl (a minimal writer; the apply stage has
/// the real one).
fn rewrite_archive(src: &Path, dst: &Path, data_pkl: &[u8]) {
    let a = torch_zip::open(src, None).unwrap();
    let mut zin = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for e in &a.layout.entries {
        zout.start_file(e.name.as_str(), options).unwrap();
        if e.name == a.layout.entry_name("data.pkl") {
            zout.write_all(data_pkl).unwrap();
        } else {
            let mut buf = Vec::new();
            zin.by_name(&e.name).unwrap().read_to_end(&mut buf).unwrap();
            zout.write_all(&buf).unwrap();
        }
    }
    zout.finish().unwrap();
}

/// Renames every key of a checkpoint's state dict in place with
/// [`pickle::rewrite_strings`], writes the archive back, and checks that weightmap and
/// real `torch.load` both see the new keys (and the rest of the checkpoint intact).
fn rename_in_place_and_load(fixture: &str, rename: impl Fn(&str) -> String) {
    let src = models().join(fixture);
    let a = torch_zip::open(&src, None).unwrap();
    let edits: Vec<_> = a
        .tensors
        .iter()
        .map(|t| (t.key_span.clone().unwrap(), rename(&t.key)))
        .collect();
    let out = pickle::rewrite_strings(&a.data_pkl, &edits).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(fixture);
    rewrite_archive(&src, &dst, &out.data);
    let b = torch_zip::open(&dst, None).unwrap();
    let want: Vec<String> = a.tensors.iter().map(|t| rename(&t.key)).collect();
    let got: Vec<String> = b.tensors.iter().map(|t| t.key.clone()).collect();
    assert_eq!(got, want, "{fixture}");
    assert_eq!(b.state_dict_key, a.state_dict_key, "{fixture}");

    let Some(python) = crate::support::python() else {
        return;
    };
    let script = "import sys, torch\n\
        c = torch.load(sys.argv[1], map_location='cpu', weights_only=False)\n\
        o = torch.load(sys.argv[2], map_location='cpu', weights_only=False)\n\
        path = [p for p in sys.argv[3].split('.') if p]\n\
        sd, osd = c, o\n\
        for p in path: sd, osd = sd[p], osd[p]\n\
        assert all(torch.equal(a, b) for a, b in zip(sd.values(), osd.values()))\n\
        if 'epoch' in o: assert c['epoch'] == o['epoch']\n\
        print('\\n'.join(sd))\n";
    let key_path = a.state_dict_path.join(".");
    let keys: Vec<String> =
        crate::support::run_python(&python, script, &[s(&dst), s(&src), &key_path])
            .lines()
            .map(str::to_string)
            .collect();
    assert_eq!(keys, want, "{fixture}");
}

#[test]
fn renamed_keys_load_in_weightmap_and_in_torch() {
    // Protocol 2 (Lightning, nested dicts, custom objects) and protocol 4 (frames).
    rename_in_place_and_load("lightning.ckpt", |k| k.replacen("model.", "net.", 1));
    rename_in_place_and_load("proto4.pth", |k| format!("renamed.{k}"));
}

#[test]
fn inspect_json_is_accepted_as_a_model() {
    let bin = env!("CARGO_BIN_EXE_weightmap");
    let path = models().join("compiled_dataparallel.pth");
    let run = Command::new(bin)
        .args(["inspect", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["format"], "torch_zip");
    assert_eq!(v["state_dict_key"], Value::Null);
    assert_eq!(strings(&v["stripped_prefixes"]), ["module.", "_orig_mod."]);
    let first = &v["tensors"][0];
    assert_eq!(first["name"], "module._orig_mod.fc1.weight");
    assert_eq!(first["normalized_name"], "fc1.weight");
    assert!(
        first.get("kind").is_none(),
        "checkpoints do not say parameter or buffer"
    );

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("spec.json");
    std::fs::write(&json, &run.stdout).unwrap();
    let again = read(&json, None, false).unwrap();
    let direct = read(&path, None, false).unwrap();
    assert_eq!(again.stripped_prefixes, direct.stripped_prefixes);
    let brief = |s: &ModelSpec| {
        s.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), t.dtype.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(brief(&again), brief(&direct));
}

#[test]
fn inspect_text_options() {
    let bin = env!("CARGO_BIN_EXE_weightmap");
    let path = models().join("nested.pth");
    let run = Command::new(bin)
        .args([
            "inspect",
            "--tree",
            "--depth",
            "1",
            "--state-dict-key",
            "ema",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(text.contains("state dict:        ema"), "{text}");
    assert!(text.contains("alternatives:      model"), "{text}");
    assert!(text.contains("fc1  W[24,12]  B[24]"), "{text}");
    let kept = Command::new(bin)
        .args(["inspect", "--json", "--keep-prefixes"])
        .arg(models().join("dataparallel.pth"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(v["stripped_prefixes"], serde_json::json!([]));
}

#[test]
fn bad_inputs_are_refused_with_a_clear_error() {
    let e = expected();
    let bad = e["bad"].as_object().unwrap();
    assert!(bad.len() >= 10);
    let bin = env!("CARGO_BIN_EXE_weightmap");
    for (name, why) in bad {
        let path = models().join("bad").join(name);
        assert!(path.exists(), "{}", path.display());
        let result = read(&path, None, false);
        assert!(result.is_err(), "{name} ({why}) was accepted");
        let msg = result.unwrap_err().to_string();
        assert!(
            msg.contains(name.as_str()),
            "{name}: the error does not name the file: {msg}"
        );

        let run = Command::new(bin)
            .arg("inspect")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{name}: exit status; stderr: {stderr}"
        );
        assert!(run.stdout.is_empty(), "{name}: partial output");
        assert!(stderr.contains(name.as_str()), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn benchmark_corpus_counts_agree_with_case_json() {
    let Some(cases) = crate::support::corpus_cases() else {
        return;
    };
    for case in cases {
        let c: Value =
            serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
        let want_source = c["source"]["num_tensors"].as_u64().unwrap() as usize;
        let want_target = c["target"]["num_tensors"].as_u64().unwrap() as usize;
        let pth = read(&case.join("source.pth"), None, false).unwrap_or_else(|e| panic!("{e}"));
        let st =
            read(&case.join("source.safetensors"), None, false).unwrap_or_else(|e| panic!("{e}"));
        let tgt =
            read(&case.join("target_state.pth"), None, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pth.tensors.len(),
            want_source,
            "{}: source.pth",
            case.display()
        );
        assert_eq!(
            st.tensors.len(),
            want_source,
            "{}: source.safetensors",
            case.display()
        );
        assert_eq!(
            tgt.tensors.len(),
            want_target,
            "{}: target_state.pth",
            case.display()
        );
        // Both source files hold the same tensors (in different orders).
        let mut a: Vec<_> = pth
            .tensors
            .iter()
            .map(|t| (t.original_name.clone(), t.shape.clone(), t.dtype.clone()))
            .collect();
        let mut b: Vec<_> = st
            .tensors
            .iter()
            .map(|t| (t.original_name.clone(), t.shape.clone(), t.dtype.clone()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(
            a,
            b,
            "{}: source.pth and source.safetensors differ",
            case.display()
        );
    }
}
