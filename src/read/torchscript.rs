//! TorchScript archives (`torch.jit.save`).
//!
//! A TorchScript archive stores its module's code and pickled object graph. Names, shapes
//! and dtypes come from the pickle and the class headers ([`read_header`]), without
//! libtorch; only the graph (static order), a forward pass or `verify` need the module
//! itself, which [`script_module`] loads (on the CPU or a device) through the C++ shim. Both
//! list the state dict exactly as `torch.jit.load(p).state_dict()` does: in registration
//! order, with each tensor's kind (parameter or buffer) and tied aliases marked. Tensor
//! attributes that are neither parameters nor buffers follow, marked not persistent.

use super::torchscript_pickle::read_checked;
pub use super::torchscript_pickle::{locate_tensors, read_header};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::spec::{Format, ModelSpec};
#[cfg(feature = "libtorch")]
use crate::spec::{TensorInfo, TensorKind};
use std::path::Path;

#[cfg(feature = "libtorch")]
use crate::libtorch::{ffi::EntryKind, ScriptModule};

/// Refuses a file that is not a TorchScript archive, saying what it is instead: libtorch's
/// own message for a checkpoint or a stray file blames "an internal miniz error" or a
/// missing constants.pkl.
fn require_torchscript(path: &Path) -> Result<()> {
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
    Ok(())
}

/// Loads the TorchScript model at `path` onto `device`, after checking that the file is a
/// TorchScript archive within the bounds of
/// [`torchscript_archive::check`](super::torchscript_archive::check).
#[cfg(feature = "libtorch")]
pub fn script_module(path: &Path, device: Device) -> Result<ScriptModule> {
    require_torchscript(path)?;
    // libtorch's loader recurses over the archive's code and pickles: bound them first.
    super::torchscript_archive::check(path)?;
    crate::progress::Progress::while_running("loading TorchScript", || {
        ScriptModule::load(path, device)
    })
}

/// Without libtorch there is no TorchScript loader: says so.
#[cfg(not(feature = "libtorch"))]
pub fn script_module(path: &Path, _device: Device) -> Result<std::convert::Infallible> {
    require_torchscript(path)?;
    Err(Error::NeedsLibtorch {
        what: format!("loading the TorchScript model {}", path.display()),
        order_needed: None,
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

/// Reads a TorchScript model's state dict (parameters and buffers) into a model spec,
/// from the archive's `data.pkl` and class headers ([`read_header`]): libtorch is not
/// loaded for names, shapes and dtypes. An archive that reader cannot follow (a module
/// with a custom `__getstate__`, say) is loaded through libtorch instead, when built in.
///
/// Errors: the archive is damaged or hostile (refused by
/// [`torchscript_archive::check`](super::torchscript_archive::check) first), or libtorch
/// cannot load it (its message on one line, naming the file).
pub fn read(path: &Path) -> Result<ModelSpec> {
    require_torchscript(path)?;
    // The same bounds as before libtorch sees the file: a file refused there is refused
    // here, whichever reader follows. One pass reads what both need.
    let header = read_checked(path);
    match header {
        #[cfg(feature = "libtorch")]
        Err(Error::Unsupported { .. }) => read_loaded(path),
        #[cfg(not(feature = "libtorch"))]
        Err(Error::Unsupported { message, .. }) => Err(Error::NeedsLibtorch {
            what: format!(
                "reading the TorchScript model {} ({message})",
                path.display()
            ),
            order_needed: None,
        }),
        other => other,
    }
}

/// Reads the state dict through libtorch (`torch::jit::load`).
#[cfg(feature = "libtorch")]
pub fn read_loaded(path: &Path) -> Result<ModelSpec> {
    let module = script_module(path, Device::Cpu)?;
    let tensors = module
        .state_entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut t = TensorInfo::new(&e.name, e.shape.clone(), &e.dtype, tensor_kind(e.kind), i);
            t.persistent = e.persistent;
            t.tied_to = e.tied_to.clone();
            t
        })
        .collect();
    Ok(ModelSpec::new(
        path.display().to_string(),
        Format::TorchScript,
        tensors,
    ))
}
