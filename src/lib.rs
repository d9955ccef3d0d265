//! weightmap works out how the weights of one PyTorch model map onto another, explains
//! why, writes the adapted checkpoint, and proves it loads and runs.
//!
//! The crate reads one way, each layer importing only those above it:
//! - **the data every stage hands on**: [`error`], [`device`], [`dtype`], [`input`]
//!   (dummy inputs of a forward pass), [`spec`] (a
//!   model's state dict described without tensor data), [`progress`], [`output`] (atomic
//!   output files), [`rules`] (regex renames with HF's `key_mapping` semantics);
//! - **shared layers**, which know no stage: [`format`] (pickle, `torch.save` zips,
//!   safetensors, JSON, read and write together) and `libtorch` (the FFI, devices, dummy
//!   inputs; behind the default cargo feature `libtorch`);
//! - **the mapping file** ([`mapping`]): the one contract between `map` and `apply`;
//! - **the stages**: [`read`] → [`normalize`] → [`trace`] → [`score`] → [`assign`] →
//!   [`mapper`] (the engine that runs them on two model specs) → [`pipeline`] (the policy
//!   "map these two files", exactly what `weightmap map` does) → [`report`] → [`apply`] →
//!   [`verify`] (with libtorch), [`diff`] (two models compared by name, structure
//!   and content), and [`export`] (a mapping as rename rules or a Python converter).
//!
//! ```no_run
//! use weightmap::pipeline::{map_files, MapRequest};
//! use std::path::Path;
//!
//! let request = MapRequest::new(Path::new("old.pth"), Path::new("new_model.pt"));
//! let result = map_files(&request)?;
//! for m in &result.mappings {
//!     println!("{} -> {} ({:.2})", m.source, m.target, m.score);
//! }
//! # Ok::<(), weightmap::Error>(())
//! ```
#![deny(missing_docs)]

pub mod device;
pub mod dtype;
pub mod error;
pub mod input;
pub mod output;
pub mod progress;
pub mod rules;
pub mod spec;

pub mod format;
#[cfg(feature = "libtorch")]
pub mod libtorch;

pub mod apply;
pub mod assign;
pub mod diff;
pub mod export;
pub mod mapper;
pub mod mapping;
pub mod normalize;
pub mod pipeline;
pub mod read;
pub mod report;
pub mod score;
pub mod trace;
#[cfg(feature = "libtorch")]
pub mod verify;

pub use device::Device;
pub use error::{Error, Result};
pub use normalize::read_model;
pub use read::ReadOptions;
pub use spec::{Format, ModelSpec, TensorInfo, TensorKind};
