//! TorchScript archives (`torch.jit.save`), read through libtorch.
//!
//! A TorchScript archive stores its module's code and pickled object graph; only libtorch can
//! rebuild the module, so the archive is loaded (on the CPU) by the C++ shim, which lists the
//! state dict exactly as `torch.jit.load(p).state_dict()` does: in registration order, with
//! each tensor's kind (parameter or buffer) and tied aliases marked. Tensor attributes that
//! are neither parameters nor buffers follow, marked not persistent.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::spec::ModelSpec;
#[cfg(feature = "libtorch")]
use crate::spec::{Format, TensorInfo, TensorKind};
use std::path::Path;

#[cfg(feature = "libtorch")]
use crate::libtorch::{ffi::EntryKind, ScriptModule};

/// Loads the TorchScript model at `path` onto `device`, after checking that the file is a
/// TorchScript archive: libtorch's own message for a checkpoint or a stray file blames "an
/// internal miniz error" or a missing constants.pkl; this says what the file is instead.
#[cfg(feature = "libtorch")]
pub fn script_module(path: &Path, device: Device) -> Result<ScriptModule> {
    let format = super::detect_format(path)?;
    if format != Format::TorchScript {
        return Err(Error::Unsupported {
            path: path.into(),
            message: format!(
                "a {} file, not a TorchScript archive; this needs the model itself, saved with torch.jit.save(torch.jit.trace(model, inputs)) or torch.jit.script",
                format.name()
            ),
        });
    }
    // libtorch's loader recurses over the archive's code and pickles: bound them first.
    super::torchscript_archive::check(path)?;
    ScriptModule::load(path, device)
}

/// Without libtorch there is no TorchScript loader: says so.
#[cfg(not(feature = "libtorch"))]
pub fn script_module(path: &Path, _device: Device) -> Result<std::convert::Infallible> {
    Err(Error::Unsupported {
        path: path.into(),
        message: "TorchScript needs libtorch, and this weightmap was built without it (cargo feature `libtorch`)".into(),
    })
}

/// The model spec's kind of a TorchScript state-dict entry.
#[cfg(feature = "libtorch")]
pub fn tensor_kind(kind: EntryKind) -> TensorKind {
    match kind {
        EntryKind::Parameter => TensorKind::Parameter,
        EntryKind::Buffer => TensorKind::Buffer,
    }
}

/// Reads a TorchScript model's state dict (parameters and buffers) into a model spec.
///
/// Errors: libtorch cannot load the archive (its message on one line, naming the file).
pub fn read(path: &Path) -> Result<ModelSpec> {
    #[cfg(feature = "libtorch")]
    {
        let module = script_module(path, Device::Cpu)?;
        let tensors = module
            .state_entries()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut t =
                    TensorInfo::new(&e.name, e.shape.clone(), &e.dtype, tensor_kind(e.kind), i);
                t.persistent = e.persistent;
                t.tied_to = e.tied_to.clone();
                t
            })
            .collect();
        Ok(ModelSpec {
            path: path.display().to_string(),
            format: Format::TorchScript,
            state_dict_key: None,
            alternatives: vec![],
            stripped_prefixes: vec![],
            tensors,
        })
    }
    #[cfg(not(feature = "libtorch"))]
    {
        script_module(path, Device::Cpu).map(|never| match never {})
    }
}
