//! weightmap's integration tests: one binary (one link against libtorch), one module per
//! area, sharing [`support`]. Modules that load TorchScript, trace or verify need the
//! `libtorch` feature; the rest also run with `--no-default-features`.

mod support;

mod architecture;
mod batched_search;
mod engine;
#[cfg(feature = "libtorch")]
mod export;
mod json_schema;
#[cfg(feature = "libtorch")]
mod overrides;
mod patterns;
mod read;
#[cfg(not(feature = "libtorch"))]
mod startup;
mod tree_width;

#[cfg(feature = "libtorch")]
mod apply;
#[cfg(feature = "libtorch")]
mod bench_corpus;
#[cfg(feature = "libtorch")]
mod conversions;
#[cfg(feature = "libtorch")]
mod diff;
#[cfg(feature = "libtorch")]
mod hardening;
#[cfg(feature = "libtorch")]
mod html_browser;
#[cfg(feature = "libtorch")]
mod lookalikes;
#[cfg(feature = "libtorch")]
mod order;
#[cfg(feature = "libtorch")]
mod progress;
#[cfg(feature = "libtorch")]
mod report;
#[cfg(feature = "libtorch")]
mod scale;
#[cfg(feature = "libtorch")]
mod torchscript;
#[cfg(feature = "libtorch")]
mod trace;
#[cfg(feature = "libtorch")]
mod trace_oracle;
#[cfg(feature = "libtorch")]
mod verify;
