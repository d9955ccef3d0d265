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
    // libtorch allocates through malloc and operator new: a third of loading a large
    // TorchScript model went to glibc's malloc. mimalloc (the Rust allocator, built with
    // its `override` feature) defines all of them, but the linker drops definitions nothing
    // in the binary calls; kept, they are exported, and libtorch binds to them. The whole
    // family must come from one allocator, since memory is freed where it was not taken.
    for symbol in ALLOCATION_SYMBOLS {
        println!("cargo:rustc-link-arg=-Wl,--undefined={symbol}");
    }
}

/// The C and C++ allocation functions mimalloc's override defines (its
/// `alloc-override.c`), every one of which must replace glibc's and libstdc++'s.
const ALLOCATION_SYMBOLS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "free",
    "cfree",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "reallocarray",
    "strdup",
    "strndup",
    "__libc_malloc",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_free",
    "__libc_cfree",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__posix_memalign",
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];
