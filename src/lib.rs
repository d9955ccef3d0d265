//! weightmap works out how the weights of one PyTorch model map onto another, explains
//! why, writes the adapted checkpoint, and proves it loads and runs.
//!
//! The pipeline, one module a stage:
//! [`read`] → [`normalize`] → [`spec`] → [`trace`] → [`score`] (with [`score_tensor`] for
//! batched candidates) → [`assign`] → [`mapper`] (the API that runs them) → [`report`] →
//! [`apply`] → [`verify`]. [`progress`] draws progress bars for the slow stages.
//!
//! ```no_run
//! use weightmap::mapper::{Mapper, MapperOptions, SuggestOptions};
//! use weightmap::ReadOptions;
//! use std::path::Path;
//!
//! let mapper = Mapper::from_paths(
//!     Path::new("old.pth"),
//!     Path::new("new_model.pt"),
//!     &ReadOptions::default(),
//!     MapperOptions::default(),
//! )?;
//! let result = mapper.suggest_mapping(&SuggestOptions::default())?;
//! for m in &result.mappings {
//!     println!("{} -> {} ({:.2})", m.source, m.target, m.score);
//! }
//! # Ok::<(), weightmap::Error>(())
//! ```
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
