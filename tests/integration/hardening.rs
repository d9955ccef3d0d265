//! Hostile and edge-case inputs (issue 16): each test names one class of bad input and
//! asserts the specific error, and for `apply` that nothing is written.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weightmap::{read_model, Error, ReadOptions};

use crate::support::{repo, s, weightmap};

fn models() -> PathBuf {
    repo().join("models")
}

fn read(path: &Path) -> weightmap::Result<weightmap::ModelSpec> {
    read_model(path, &ReadOptions::default())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Writes a safetensors file of F32 tensors (name, shape), data zeros.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<u64>)]) {
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, shape) in tensors {
        let n: u64 = shape.iter().product::<u64>() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + n]}),
        );
        at += n;
    }
    let text = serde_json::Value::Object(header).to_string();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    let f = std::fs::File::create(path).unwrap();
    use std::io::Write;
    (&f).write_all(&bytes).unwrap();
    // The data is a hole: large sources cost no disk and no time to make.
    f.set_len(bytes.len() as u64 + at).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a plain syscall with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

// ---- 2. checked arithmetic -------------------------------------------------------------

#[test]
fn apply_refuses_a_reshape_whose_product_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.safetensors");
    write_safetensors(&src, &[("w", vec![128, 32])]);
    let mapping = dir.path().join("m.json");
    // 28672 * 7905747460161236407 wraps around to 4096 = 128 * 32 in 64 bits.
    std::fs::write(
        &mapping,
        r#"{"w": {"target": "v", "transform": {"reshape": [28672, 7905747460161236407]}}}"#,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let o = weightmap(&["apply", s(&src), "--mapping", s(&mapping), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("product overflows 64 bits"),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(dir.path()), ["m.json", "src.safetensors"]);
}

#[test]
fn spec_json_refuses_numel_overflow_negative_and_unknown_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"tensors": [{"name": "a", "shape": [4294967296, 4294967296], "dtype": "float32"}]}"#,
            "more elements than a 64-bit count holds",
        ),
        (
            r#"{"tensors": [{"name": "a", "shape": [2, 3], "numel": -1}]}"#,
            "\"numel\" is -1 but the shape [2, 3] has 6 elements",
        ),
        (
            r#"{"tensors": [{"name": "a", "shape": [2, 3], "numel": 18446744073709551616}]}"#,
            "but the shape [2, 3] has 6 elements",
        ),
        (
            r#"{"tensors": [{"name": "a", "shape": [2], "dtype": "float33"}]}"#,
            "unknown dtype \"float33\"",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("spec{i}.json"));
        std::fs::write(&p, text).unwrap();
        match read(&p) {
            Err(Error::Corrupt { message, .. }) => {
                assert!(message.contains(want), "{text}: {message}")
            }
            other => panic!("{text}: expected a corrupt-spec error, got {other:?}"),
        }
    }
}

#[test]
fn torch_zip_shape_overflow_is_refused() {
    // A zero stride lets a huge shape fit a one-element storage; its element count must
    // still not wrap around.
    let e = weightmap::spec::checked_numel(&[1 << 32, 1 << 32]);
    assert_eq!(e, None);
    assert_eq!(weightmap::spec::checked_numel(&[3, -1]), None);
    assert_eq!(weightmap::spec::checked_numel(&[]), Some(1));
}

// ---- 4. --force replaces regular files only ---------------------------------------------

#[test]
fn force_leaves_a_fifo_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    mkfifo(&out);
    let o = weightmap(&[
        "apply",
        s(&models().join("demo_source.safetensors")),
        "--mapping",
        s(&models().join("demo_mapping_truth.json")),
        "-o",
        s(&out),
        "--force",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::symlink_metadata(&out)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(listing(dir.path()), ["out.safetensors"]);
}

#[test]
fn force_refuses_a_link_to_a_character_device() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    std::os::unix::fs::symlink("/dev/null", &out).unwrap();
    let o = weightmap(&[
        "apply",
        s(&models().join("demo_source.safetensors")),
        "--mapping",
        s(&models().join("demo_mapping_truth.json")),
        "-o",
        s(&out),
        "--force",
    ]);
    assert!(
        stderr(&o).contains("is not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

// ---- 5. shards stay in the index's folder -----------------------------------------------

#[test]
fn shard_linked_outside_the_index_folder_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.safetensors");
    write_safetensors(&secret, &[("w", vec![2])]);
    std::os::unix::fs::symlink(&secret, dir.path().join("model-1.safetensors")).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map": {"w": "model-1.safetensors"}}"#).unwrap();
    match read(&index) {
        Err(Error::Corrupt { message, .. }) => {
            assert!(message.contains("outside the index's folder"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same shard copied beside the index is read.
    std::fs::remove_file(dir.path().join("model-1.safetensors")).unwrap();
    std::fs::copy(&secret, dir.path().join("model-1.safetensors")).unwrap();
    assert_eq!(read(&index).unwrap().tensors.len(), 1);
}

// ---- 6. say what is wrong ---------------------------------------------------------------

#[test]
fn fifo_input_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.pth");
    mkfifo(&p);
    match read(&p) {
        Err(Error::UnknownFormat { message, .. }) => {
            assert!(message.contains("not a regular file"), "{message}")
        }
        other => panic!("expected 'not a regular file', got {other:?}"),
    }
}

#[test]
fn dev_zero_input_is_not_a_regular_file() {
    let o = weightmap(&["inspect", "/dev/zero"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/dev/zero: not a regular file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn empty_mapping_needs_allow_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("m.json");
    std::fs::write(&mapping, "{}").unwrap();
    let out = dir.path().join("out.safetensors");
    let src = models().join("demo_source.safetensors");
    let args = ["apply", s(&src), "--mapping", s(&mapping), "-o", s(&out)];
    let o = weightmap(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("maps no tensor"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-empty"), "{}", stderr(&o));
    assert_eq!(listing(dir.path()), ["m.json"]);
    let o = weightmap(&[&args[..], &["--allow-empty"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
}

#[test]
fn duplicate_names_in_a_safetensors_header_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dup.safetensors");
    let text = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&p, bytes).unwrap();
    match read(&p) {
        Err(Error::Corrupt { message, .. }) => {
            assert!(message.contains("the key \"w\" appears twice"), "{message}")
        }
        other => panic!("expected a duplicate-name error, got {other:?}"),
    }
}

#[test]
fn duplicate_names_in_a_spec_json_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spec.json");
    std::fs::write(
        &p,
        r#"{"tensors": [{"name": "a.w", "shape": [2]}, {"name": "b", "shape": [1]}, {"name": "a.w", "shape": [3]}]}"#,
    )
    .unwrap();
    match read(&p) {
        Err(Error::Corrupt { message, .. }) => assert!(
            message.contains("tensors[2]: the name 'a.w' is also tensors[0]"),
            "{message}"
        ),
        other => panic!("expected a duplicate-name error, got {other:?}"),
    }
}

#[test]
fn duplicate_keys_in_a_mapping_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.json");
    std::fs::write(&p, r#"{"a": "x", "a": "y"}"#).unwrap();
    let e = weightmap::apply::Mapping::load(&p).unwrap_err();
    assert!(e.to_string().contains("\"a\" appears twice"), "{e}");
}

// ---- 3. temporary files -----------------------------------------------------------------

#[test]
fn sigterm_during_apply_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.safetensors");
    // 256 MiB transposed element by element: a window of a second or more mid-write.
    write_safetensors(&src, &[("w", vec![8192, 8192])]);
    let mapping = dir.path().join("m.json");
    std::fs::write(
        &mapping,
        r#"{"w": {"target": "v", "transform": "transpose"}}"#,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .args(["apply", s(&src), "--mapping", s(&mapping), "-o", s(&out)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let tmp = loop {
        let found = listing(dir.path())
            .into_iter()
            .find(|n| n.starts_with(&format!(".weightmap-{}-", child.id())));
        if let Some(n) = found {
            break n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "apply ended before its temporary file was seen"
        );
        assert!(
            start.elapsed().as_secs() < 60,
            "no temporary file after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(!dir.path().join(&tmp).exists(), "{tmp} was left behind");
    assert_eq!(listing(dir.path()), ["m.json", "src.safetensors"]);
}

#[test]
fn stale_temporary_file_of_an_ended_process_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    // A process that has ended: a child we waited for.
    let dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let stale = dir.path().join(format!(".weightmap-{pid}-abc123.tmp"));
    std::fs::write(&stale, b"partial").unwrap();
    let unknown = dir.path().join(".weightmap-Xy12Ab.tmp");
    std::fs::write(&unknown, b"partial").unwrap();
    let out = dir.path().join("out.safetensors");
    let o = weightmap(&[
        "apply",
        s(&models().join("demo_source.safetensors")),
        "--mapping",
        s(&models().join("demo_mapping_truth.json")),
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert!(
        stderr(&o).contains(&format!("process {pid} has ended")),
        "{}",
        stderr(&o)
    );
    // One whose owner cannot be told is reported, not removed.
    assert!(unknown.exists());
    assert!(
        stderr(&o).contains("looks like the leftover"),
        "{}",
        stderr(&o)
    );
}

// ---- 1. TorchScript archives are bounded before libtorch loads them ---------------------

/// Runs `inspect` and `map` (both directions) on a hostile TorchScript file: each must end
/// with exit status 1 (not a signal) and `want` in its message, naming the file.
fn refused_everywhere(file: &str, want: &str) {
    let bad = models().join("bad").join(file);
    assert!(
        bad.is_file(),
        "{} is missing; run scripts/make_bad_fixtures.py",
        bad.display()
    );
    match weightmap::read::torchscript_archive::check(&bad) {
        Err(Error::Corrupt { message, .. }) => assert!(message.contains(want), "{message}"),
        other => panic!("{file}: expected a refusal, got {other:?}"),
    }
    let good = models().join("demo_source.safetensors");
    for args in [
        vec!["inspect", s(&bad)],
        vec!["map", s(&good), s(&bad)],
        vec!["map", s(&bad), s(&good)],
    ] {
        let o = weightmap(&args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args:?}: {:?} {}",
            o.status,
            stderr(&o)
        );
        assert!(stderr(&o).contains(file), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn torchscript_with_100000_nested_parentheses_is_refused() {
    refused_everywhere("ts_deep_code.pt", "brackets nest more than 200 deep");
}

#[test]
fn torchscript_with_a_million_deep_constants_list_is_refused() {
    refused_everywhere(
        "ts_deep_constants.pt",
        "constants.pkl: containers nest 1000000 deep",
    );
}

#[test]
fn torchscript_with_a_4_gib_string_length_is_refused() {
    refused_everywhere(
        "ts_huge_string.pt",
        "data.pkl: pickle byte 2: opcode 0x58 declares 4294967295 bytes",
    );
}

/// The debug files (`*.debug_pkl`) of an archive are neither checked nor loaded: a
/// million-deep list in each of them (which the bounded pickle machine refuses) does not
/// stop reading, tracing or a forward pass, since libtorch is asked not to load them.
#[test]
fn torchscript_debug_files_are_neither_checked_nor_loaded() {
    let ts = models().join("bad").join("ts_deep_debug_pkl.pt");
    assert!(
        ts.is_file(),
        "{} is missing; run scripts/make_bad_fixtures.py",
        ts.display()
    );
    weightmap::read::torchscript_archive::check(&ts).unwrap_or_else(|e| panic!("{e}"));
    let o = weightmap(&["inspect", s(&ts)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.contains("2 tensors"), "{listing}");
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order.json");
    let o = weightmap(&["trace", s(&ts), "-o", s(&order)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let order = std::fs::read_to_string(&order).unwrap();
    assert!(order.contains("fc.weight"), "{order}");
}

#[test]
fn real_torchscript_fixtures_pass_the_check() {
    for f in [
        "scripted.pt",
        "demo_target.pt",
        "trace_branch.pt",
        "order_target.pt",
    ] {
        weightmap::read::torchscript_archive::check(&models().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

// ---- every other hostile file in models/bad/, one named test each -----------------------

/// `weightmap inspect FILE` ends with exit status 1, nothing on stdout, and `want` (which
/// names the problem) after the file's name on stderr.
fn inspect_refuses(file: &str, want: &str) {
    let path = models().join("bad").join(file);
    assert!(
        path.is_file(),
        "{} is missing; run scripts/make_fixtures.py",
        path.display()
    );
    let o = weightmap(&["inspect", s(&path)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{file}: {:?} {}",
        o.status,
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "{file}: partial output");
    let err = stderr(&o);
    assert!(err.contains(&format!("{file}: ")), "{file}: {err}");
    assert!(err.contains(want), "{file}: {err}");
}

macro_rules! bad_file_tests {
    ($($test:ident: $file:literal => $want:literal;)*) => {$(
        #[test]
        fn $test() {
            inspect_refuses($file, $want);
        }
    )*};
}

bad_file_tests! {
    bad_absurd_shape_safetensors: "absurd_shape.safetensors" => "tensor 'w': shape overflows";
    bad_corrupt_central_directory: "corrupt_cd.pth" => "corrupt zip";
    bad_deep_mark_recursion: "deep_recursion.pth" => "MARKs nested deeper than 10000";
    bad_empty_file: "empty.pth" => "the file is empty";
    bad_header_too_large: "header_too_large.safetensors" => "header declares 18446744073709551615 bytes";
    bad_huge_string_length: "huge_length.pth" => "declares 4611686018427387904 bytes but only 2 remain";
    bad_legacy_format: "legacy.pth" => "legacy (pre-1.6, non-zip) torch.save format";
    bad_memo_bomb: "memo_bomb.pth" => "more than 4194304 memo entries";
    bad_missing_record: "missing_record.pth" => "which the archive does not contain";
    bad_neither_json: "neither.json" => "neither a safetensors index";
    bad_zip_without_data_pkl: "no_data_pkl.zip" => "a zip archive without data.pkl";
    bad_random_bytes: "random.bin" => "not a torch.save checkpoint, TorchScript archive";
    bad_short_record: "short_record.pth" => "needs 864 bytes of storage record";
    bad_truncated_zip: "truncated.pth" => "corrupt zip";
    bad_truncated_safetensors: "truncated.safetensors" => "(truncated file?)";
    bad_whole_module: "whole_module.pth" => "not a state dict";
}
