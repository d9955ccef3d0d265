//! weightmap works out how the weights of one PyTorch model map onto another, explains
//! why, writes the adapted checkpoint, and proves it loads and runs.
//!
//! The pipeline, one module a stage:
//! [`read`] → [`normalize`] → [`spec`] → [`trace`] → score → assign → report → apply → verify.
#![deny(missing_docs)]

pub mod apply;
pub mod assign;
pub mod error;
pub mod mapper;
pub mod normalize;
pub mod progress;
pub mod read;
pub mod report;
pub mod score;
pub mod score_tensor;
pub mod spec;
pub mod trace;
pub mod verify;

pub use error::{Error, Result};
pub use read::{read_model, ReadOptions};
pub use spec::{Format, ModelSpec, TensorInfo, TensorKind};
