//! `verify --reference FILE`: inputs and the outputs the original model gave on them, saved
//! once with `torch.save({"inputs": [tensor, ...], "reference_output": tensor or [tensors]},
//! FILE)` (the layout of the benchmark corpus' `io.pt`).
//!
//! The file is read as `torch.load(FILE, weights_only=True)` would, but by weightmap's own
//! pickle reader, which never imports or calls what the pickle names: only the dict, its
//! lists and its tensors are taken, each tensor's bytes read from its storage record.

use super::load_tensor;
use crate::apply::TensorData;
use crate::error::{Error, Result};
use crate::format::pickle::{Pickle, Value};
use crate::format::torch_zip;
use crate::spec::{Format, ModelSpec, TensorInfo};
use std::path::Path;
use tch::Tensor;

/// Key of the inputs list.
pub const INPUTS_KEY: &str = "inputs";
/// Key of the reference output(s).
pub const OUTPUT_KEY: &str = "reference_output";

/// A reference file read into memory.
pub struct Reference {
    /// The forward inputs, in argument order.
    pub inputs: Vec<Tensor>,
    /// The reference outputs.
    pub outputs: Vec<Tensor>,
    /// Whether `reference_output` is a list (compared with every tensor forward returns)
    /// or one tensor (compared with the output `verify` takes: the tensor, the first of a
    /// tuple, a dict's `logits`).
    pub output_is_list: bool,
}

fn layout_error(path: &Path, message: String) -> Error {
    Error::Unsupported {
        path: path.into(),
        message: format!(
            "{message}; a reference is torch.save({{\"{INPUTS_KEY}\": [tensor, ...], \"{OUTPUT_KEY}\": tensor or [tensor, ...]}}, FILE)"
        ),
    }
}

/// The tensors of `value`: a tensor, or a list or tuple of tensors (`what` names it in
/// errors).
fn tensors(
    pickle: &Pickle,
    value: Value,
    what: &str,
    path: &Path,
) -> Result<(Vec<TensorInfo>, bool)> {
    if let Some(t) = pickle.tensor(value) {
        return Ok((vec![torch_zip::tensor_info(what, t, 0)], false));
    }
    let Some(items) = pickle.sequence(value) else {
        return Err(layout_error(
            path,
            format!(
                "'{what}' is a {}, not a tensor or a list of tensors",
                pickle.type_name(value)
            ),
        ));
    };
    if items.is_empty() {
        return Err(layout_error(path, format!("'{what}' is an empty list")));
    }
    let infos = items
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            pickle
                .tensor(v)
                .map(|t| torch_zip::tensor_info(&format!("{what}[{i}]"), t, i))
                .ok_or_else(|| {
                    layout_error(
                        path,
                        format!("'{what}[{i}]' is a {}, not a tensor", pickle.type_name(v)),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((infos, true))
}

/// Reads the reference file at `path` (see the module documentation). Errors name the
/// file and say what is wrong: not a `torch.save` zip, not a dict, a key missing, a value
/// that is not tensors, a tensor whose bytes lie outside its storage record.
pub fn read(path: &Path) -> Result<Reference> {
    let (_, pickle) = torch_zip::read_object(path).map_err(|e| match e {
        Error::Corrupt { message, .. } if message.starts_with("unreadable zip") => layout_error(
            path,
            "not a readable torch.save file (a zip archive with data.pkl; truncated?)".into(),
        ),
        other => other,
    })?;
    let root = pickle.root();
    if pickle.dict(root).is_none() {
        return Err(layout_error(
            path,
            format!("holds a {}, not a dict", pickle.type_name(root)),
        ));
    }
    let get = |key: &str| {
        pickle.dict_get(root, key).ok_or_else(|| Error::MissingKey {
            context: path.display().to_string(),
            key: key.into(),
            hint: format!(
                "; a reference is a dict with \"{INPUTS_KEY}\" (a list of tensors) and \"{OUTPUT_KEY}\" (a tensor or a list of tensors)"
            ),
        })
    };
    let (inputs, _) = tensors(&pickle, get(INPUTS_KEY)?, INPUTS_KEY, path)?;
    let (outputs, output_is_list) = tensors(&pickle, get(OUTPUT_KEY)?, OUTPUT_KEY, path)?;
    let n_inputs = inputs.len();
    let mut all = inputs;
    all.extend(outputs);
    let spec = ModelSpec::new(path.display().to_string(), Format::TorchZip, all);
    let data = TensorData::open(&spec)?;
    let mut loaded = spec
        .tensors
        .iter()
        .map(|t| load_tensor(&data, t, path))
        .collect::<Result<Vec<_>>>()?;
    let outputs = loaded.split_off(n_inputs);
    Ok(Reference {
        inputs: loaded,
        outputs,
        output_is_list,
    })
}
