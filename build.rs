//! Build script: links the binary against the libtorch that torch-sys uses, with an
//! rpath so it runs without LD_LIBRARY_PATH, keeps libtorch_cuda linked, and compiles
//! the small C++ shim (`src/libtorch/shim.cpp`) for what tch does not expose: the
//! TorchScript module's state dict with buffers and hierarchy, its inlined graph, and
//! execution order through `at::RecordFunction`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/libtorch/shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // Without the `libtorch` feature there is no shim to build and nothing to link.
    if env::var_os("CARGO_FEATURE_LIBTORCH").is_none() {
        return;
    }

    // torch-sys publishes the lib dir it linked against (links = "tch"); the include
    // dir sits beside it in both libtorch and the PyPI wheel's torch/ folder.
    let lib_dir = match env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(
            env::var("LIBTORCH").expect("LIBTORCH is not set: run scripts/setup.sh first"),
        )
        .join("lib"),
    };
    let lib_dir = lib_dir.canonicalize().unwrap_or(lib_dir);
    let root = lib_dir
        .parent()
        .expect("libtorch lib dir has a parent")
        .to_path_buf();

    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // libtorch is a release build: some of its classes have debug-only members under
        // `#ifndef NDEBUG` (at::RecordFunction::inputs_valid_), so the shim must see the
        // same layout and the same (absent) debug assertions.
        .define("NDEBUG", None)
        .file("src/libtorch/shim.cpp")
        .compile("weightmap_shim");

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    // The binary, tests and examples find libtorch at run time without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    // libtorch_cuda.so is not linked: the binary loads it at run time when a CUDA device is
    // requested (libtorch::load_cuda_backend), so CPU-only commands don't pay for it.
    for lib in ["torch_cpu", "torch", "c10"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
