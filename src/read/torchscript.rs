//! TorchScript archives (`torch.jit.save`), read through libtorch.
//!
//! A TorchScript archive stores its module's code and pickled object graph; only libtorch can
//! rebuild the module, so the archive is loaded (on the CPU) by the C++ shim, which lists the
//! state dict exactly as `torch.jit.load(p).state_dict()` does: in registration order, with
//! each tensor's kind (parameter or buffer) and tied aliases marked. Tensor attributes that
//! are neither parameters nor buffers follow, marked not persistent.

use crate::error::Result;
use crate::spec::ModelSpec;
use crate::trace::ScriptModule;
use std::path::Path;

/// Reads a TorchScript model's state dict (parameters and buffers) into a model spec.
///
/// Errors: libtorch cannot load the archive (its message on one line, naming the file).
pub fn read(path: &Path) -> Result<ModelSpec> {
    Ok(ScriptModule::load(path, tch::Device::Cpu)?.model_spec())
}
