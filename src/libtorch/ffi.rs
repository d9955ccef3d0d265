//! Safe wrappers over the C++ shim (`src/libtorch/shim.cpp`): a loaded TorchScript module,
//! its state dict in registration order, its tensors as `tch::Tensor`s sharing storage with
//! it, `forward`, and the raw tensor uses behind the static and dynamic orders.
//!
//! The shim never throws across the boundary: errors come back as C strings, lists as JSON
//! strings, both freed here with `wm_string_free`.

use super::check_device;
use crate::device::Device;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// The shim's opaque module handle (`struct wm_module`).
#[repr(C)]
struct WmModule {
    _private: [u8; 0],
}

extern "C" {
    fn wm_string_free(s: *mut c_char);
    fn wm_cuda_is_available() -> c_int;
    fn wm_module_load(
        path: *const c_char,
        device: *const c_char,
        err: *mut *mut c_char,
    ) -> *mut WmModule;
    fn wm_module_free(m: *mut WmModule);
    fn wm_module_to(m: *mut WmModule, device: *const c_char, err: *mut *mut c_char) -> c_int;
    fn wm_module_entries_json(m: *mut WmModule, err: *mut *mut c_char) -> *mut c_char;
    fn wm_module_entry_count(m: *const WmModule) -> usize;
    fn wm_module_entry_tensor(m: *const WmModule, i: usize) -> *mut c_void;
    fn wm_module_forward(
        m: *mut WmModule,
        inputs: *const *mut c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn wm_module_forward_all(
        m: *mut WmModule,
        inputs: *const *mut c_void,
        n: usize,
        count: *mut usize,
        err: *mut *mut c_char,
    ) -> *mut *mut c_void;
    fn wm_array_free(a: *mut *mut c_void);
    fn wm_module_trace_dynamic(
        m: *mut WmModule,
        inputs: *const *mut c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> *mut c_char;
    fn wm_module_trace_static(m: *mut WmModule, err: *mut *mut c_char) -> *mut c_char;
    fn wm_trace_progress(ops: *mut u64, tensors: *mut u64);
    fn wm_module_graph_summary(m: *mut WmModule, err: *mut *mut c_char) -> *mut c_char;
}

/// Longest libtorch message kept in an error, in characters (TorchScript tracebacks can run
/// to pages; the line that says what went wrong is short).
const MAX_MESSAGE_CHARS: usize = 400;

/// True when the shim sees a CUDA device (the backend must be loaded first).
pub(super) fn cuda_is_available() -> bool {
    // SAFETY: a plain C function without arguments that catches every exception.
    unsafe { wm_cuda_is_available() != 0 }
}

/// Turns a libtorch message into one readable line: from a TorchScript traceback, the final
/// `SomethingError: ...` line that says what failed; otherwise the first non-empty line;
/// whitespace collapsed, cut at [`MAX_MESSAGE_CHARS`].
pub fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_error_line = |l: &&&str| {
        l.split_once(": ")
            .map(|(head, _)| head.ends_with("Error") && !head.contains(' '))
            .unwrap_or(false)
    };
    let chosen = lines
        .iter()
        .rev()
        .find(is_error_line)
        .or(lines.first())
        .copied()
        .unwrap_or("(no message)");
    // miniz errors carry a paragraph of generic advice after the message; drop it.
    let chosen = chosen
        .split(" This is an internal miniz error")
        .next()
        .unwrap_or(chosen);
    let mut line = chosen.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_MESSAGE_CHARS {
        line = line.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "...";
    }
    line
}

/// Takes ownership of a shim string (result or error) and frees it.
fn take_string(s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the shim returns NUL-terminated strings from malloc, freed once here.
    let text = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    // SAFETY: `s` came from the shim and is not used after this.
    unsafe { wm_string_free(s) };
    Some(text)
}

/// One tensor of a TorchScript module, in registration order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StateEntry {
    /// The dotted state-dict name (`layer1.0.conv1.weight`).
    pub name: String,
    /// Parameter or buffer (tensor attributes outside the state dict count as buffers).
    pub kind: EntryKind,
    /// The shape.
    pub shape: Vec<i64>,
    /// The dtype, as torch names it (`float32`, `int64`, ...).
    pub dtype: String,
    /// False for a tensor attribute that is neither parameter nor buffer: the module holds
    /// it but its state dict does not list it. TorchScript does not record whether a buffer
    /// was registered with `persistent=False` (`torch.jit.load(p).state_dict()` lists such
    /// buffers), so every buffer is persistent here.
    pub persistent: bool,
    /// The first name of the same tensor, when this name is a tied alias.
    pub tied_to: Option<String>,
}

/// Whether a state-dict entry is a parameter or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A learnable parameter.
    Parameter,
    /// A buffer (running statistics, index tables) or a tensor attribute.
    Buffer,
}

#[derive(Deserialize)]
struct EntriesJson {
    entries: Vec<StateEntry>,
    modules: Vec<String>,
}

/// The forward graph in brief, as the shim reports it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GraphSummary {
    /// Forward's schema: inputs and outputs with their types.
    pub schema: String,
    /// Nodes of the inlined graph by kind (`aten::conv2d`), sorted by kind.
    pub ops: std::collections::BTreeMap<String, usize>,
}

/// Uses of the module's tensors by ops, in call order, as the shim reports them.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Uses {
    /// Each use: which entry (the first name of a tied tensor), which call, which op.
    pub uses: Vec<TensorUse>,
}

/// One tensor use by one op.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TensorUse {
    /// Index into [`ScriptModule::state_entries`]: in the dynamic order the first name of a
    /// tied tensor (identity cannot tell names apart), in the static order the name used.
    pub entry: usize,
    /// Which call (dynamic) or graph node (static) it was.
    pub call: u64,
    /// The op (`aten::linear`).
    pub op: String,
}

/// A TorchScript module loaded through libtorch, with its state dict listed.
///
/// Not `Sync`: libtorch modules must not run forward from two threads at once.
pub struct ScriptModule {
    ptr: NonNull<WmModule>,
    path: PathBuf,
    device: Device,
    entries: Vec<StateEntry>,
    modules: Vec<String>,
}

// SAFETY: the module owns its libtorch objects; moving it to another thread is fine, using
// it from two at once is not (no Sync).
unsafe impl Send for ScriptModule {}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from wm_module_load and is freed exactly once.
        unsafe { wm_module_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for ScriptModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptModule")
            .field("path", &self.path)
            .field("device", &self.device)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn c_string(what: &str, text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| {
        Error::invalid(
            what,
            format!("'{}' contains a NUL byte", text.escape_debug()),
        )
    })
}

impl ScriptModule {
    /// Loads the TorchScript archive at `path` onto `device`, in eval mode.
    ///
    /// Errors: the file is missing or not a TorchScript archive (libtorch's message on one
    /// line, naming the file); `device` is CUDA and CUDA is not available. The read stage
    /// checks the archive before this (`read::script_module`): libtorch's loader is
    /// not built for hostile input.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        check_device(device)?;
        let c_path = c_string("path", &path.to_string_lossy())?;
        let c_device = c_string("device", &device.to_string())?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C strings; the shim catches all exceptions and sets `err` on failure.
        let raw = unsafe { wm_module_load(c_path.as_ptr(), c_device.as_ptr(), &mut err) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| torch_error(path, "loading TorchScript", take_string(err)))?;
        let mut module = ScriptModule {
            ptr,
            path: path.to_path_buf(),
            device,
            entries: vec![],
            modules: vec![],
        };
        module.refresh()?;
        Ok(module)
    }

    fn refresh(&mut self) -> Result<()> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `ptr` is a live module.
        let json = take_string(unsafe { wm_module_entries_json(self.ptr.as_ptr(), &mut err) })
            .ok_or_else(|| torch_error(&self.path, "listing the state dict", take_string(err)))?;
        let parsed: EntriesJson = serde_json::from_str(&json).map_err(|e| Error::Torch {
            context: self.path.display().to_string(),
            message: format!(
                "the shim's state-dict listing is not valid JSON ({e}); this is a weightmap bug"
            ),
        })?;
        self.entries = parsed.entries;
        self.modules = parsed.modules;
        Ok(())
    }

    /// The file the module was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the module's tensors are on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Every state-dict entry in registration order (a module's own parameters, then its own
    /// buffers, then its children, as `state_dict()` lists them), tied aliases included and
    /// marked, followed within each module by tensor attributes outside the state dict.
    pub fn state_entries(&self) -> &[StateEntry] {
        &self.entries
    }

    /// Dotted paths of every module (the root is `""`), in registration order, including
    /// modules without tensors.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// The module's tensors under their names (same order as [`Self::state_entries`]). They
    /// share storage with the module: copying data into them (`Tensor::copy_` under
    /// `tch::no_grad`) changes what `forward` computes.
    pub fn named_tensors(&self) -> Vec<(String, tch::Tensor)> {
        // SAFETY: `ptr` is a live module.
        let count = unsafe { wm_module_entry_count(self.ptr.as_ptr()) };
        let mut out = Vec::with_capacity(count);
        for (i, entry) in self.entries.iter().enumerate().take(count) {
            // SAFETY: in range; the shim returns a new at::Tensor* (tch's C_tensor) or null.
            let raw = unsafe { wm_module_entry_tensor(self.ptr.as_ptr(), i) };
            if raw.is_null() {
                continue;
            }
            // SAFETY: a fresh heap at::Tensor handle that tch now owns and frees.
            let tensor = unsafe { tch::Tensor::from_ptr(raw as *mut torch_sys::C_tensor) };
            out.push((entry.name.clone(), tensor));
        }
        out
    }

    /// Runs `forward` on `inputs` without grad and returns its output tensor: the tensor
    /// itself, the first tensor of a tuple or list, or a dict's `logits` (else first tensor).
    pub fn forward(&self, inputs: &[tch::Tensor]) -> Result<tch::Tensor> {
        let ptrs = input_ptrs(inputs);
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live module; `ptrs` point at tensors borrowed for the call.
        let raw =
            unsafe { wm_module_forward(self.ptr.as_ptr(), ptrs.as_ptr(), ptrs.len(), &mut err) };
        if raw.is_null() {
            return Err(torch_error(&self.path, "running forward", take_string(err)));
        }
        // SAFETY: a fresh heap at::Tensor handle that tch now owns.
        Ok(unsafe { tch::Tensor::from_ptr(raw as *mut torch_sys::C_tensor) })
    }

    /// Runs `forward` on `inputs` without grad and returns every tensor of its output, depth
    /// first: the tensor itself, the elements of a tuple or list, a dict's values in order.
    pub fn forward_all(&self, inputs: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        let ptrs = input_ptrs(inputs);
        let mut err: *mut c_char = std::ptr::null_mut();
        let mut count = 0usize;
        // SAFETY: live module; `ptrs` point at tensors borrowed for the call.
        let raw = unsafe {
            wm_module_forward_all(
                self.ptr.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                &mut count,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(torch_error(&self.path, "running forward", take_string(err)));
        }
        let tensors = (0..count)
            // SAFETY: `count` fresh heap at::Tensor handles, each taken once; tch owns them.
            .map(|i| unsafe { tch::Tensor::from_ptr(*raw.add(i) as *mut torch_sys::C_tensor) })
            .collect();
        // SAFETY: the array came from the shim's malloc and its entries were taken above.
        unsafe { wm_array_free(raw) };
        Ok(tensors)
    }

    /// Moves the module's parameters and buffers to `device`.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        check_device(device)?;
        let c_device = c_string("device", &device.to_string())?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live module, valid C string.
        if unsafe { wm_module_to(self.ptr.as_ptr(), c_device.as_ptr(), &mut err) } != 0 {
            return Err(torch_error(
                &self.path,
                "moving the module",
                take_string(err),
            ));
        }
        self.device = device;
        self.refresh()
    }

    /// Runs forward on `inputs` under an op observer and returns every use of the module's
    /// tensors by an outermost op, in call order.
    pub(crate) fn dynamic_uses(&self, inputs: &[tch::Tensor]) -> Result<Uses> {
        let ptrs = input_ptrs(inputs);
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live module; `ptrs` point at tensors borrowed for the call.
        let json = unsafe {
            wm_module_trace_dynamic(self.ptr.as_ptr(), ptrs.as_ptr(), ptrs.len(), &mut err)
        };
        let json = take_string(json)
            .ok_or_else(|| torch_error(&self.path, "running forward", take_string(err)))?;
        self.parse_uses(&json)
    }

    /// Walks the inlined forward graph and returns every use of the module's tensors, in
    /// graph order.
    pub(crate) fn static_uses(&self) -> Result<Uses> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live module.
        let json = unsafe { wm_module_trace_static(self.ptr.as_ptr(), &mut err) };
        let json = take_string(json).ok_or_else(|| {
            torch_error(&self.path, "reading the forward graph", take_string(err))
        })?;
        self.parse_uses(&json)
    }

    /// The forward graph in brief: its schema and how many nodes of each kind the inlined
    /// graph has.
    pub(crate) fn graph_summary(&self) -> Result<GraphSummary> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live module.
        let json = unsafe { wm_module_graph_summary(self.ptr.as_ptr(), &mut err) };
        let json = take_string(json).ok_or_else(|| {
            torch_error(&self.path, "reading the forward graph", take_string(err))
        })?;
        serde_json::from_str(&json).map_err(|e| Error::Torch {
            context: self.path.display().to_string(),
            message: format!(
                "the shim's graph summary is not valid JSON ({e}); this is a weightmap bug"
            ),
        })
    }

    fn parse_uses(&self, json: &str) -> Result<Uses> {
        let uses: Uses = serde_json::from_str(json).map_err(|e| Error::Torch {
            context: self.path.display().to_string(),
            message: format!("the shim's trace is not valid JSON ({e}); this is a weightmap bug"),
        })?;
        if let Some(bad) = uses.uses.iter().find(|u| u.entry >= self.entries.len()) {
            return Err(Error::Torch {
                context: self.path.display().to_string(),
                message: format!(
                    "the shim reported tensor #{} of {}; this is a weightmap bug",
                    bad.entry,
                    self.entries.len()
                ),
            });
        }
        Ok(uses)
    }
}

/// The dynamic trace in progress (in any thread): (outermost ops seen, distinct tensors
/// used) so far; for a progress bar.
pub(crate) fn trace_progress() -> (u64, u64) {
    let (mut ops, mut tensors) = (0u64, 0u64);
    // SAFETY: the shim only stores two integers through the pointers.
    unsafe { wm_trace_progress(&mut ops, &mut tensors) };
    (ops, tensors)
}

fn input_ptrs(inputs: &[tch::Tensor]) -> Vec<*mut c_void> {
    // tch's C_tensor is an `at::Tensor*`; the shim only reads through it.
    inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// A libtorch failure while `doing` something with `path`, on one line.
fn torch_error(path: &Path, doing: &str, message: Option<String>) -> Error {
    Error::Torch {
        context: format!("{} ({doing})", path.display()),
        message: one_line(message.as_deref().unwrap_or("failed without a message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_picks_the_error_line_of_a_traceback() {
        let msg = "The following operation failed in the TorchScript interpreter.\n\
                   Traceback of TorchScript, serialized code (most recent call last):\n  \
                   File \"code/__torch__.py\", line 8, in forward\n    x = torch._convolution(x)\n\
                   RuntimeError: Expected 3D (unbatched) or 4D (batched) input to conv2d,  but got input of size: [1, 5]\n";
        assert_eq!(
            one_line(msg),
            "RuntimeError: Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [1, 5]"
        );
        assert_eq!(
            one_line("\n  open file failed because of errno 2\nmore\n"),
            "open file failed because of errno 2"
        );
        assert_eq!(
            one_line(&"x".repeat(1000)).chars().count(),
            MAX_MESSAGE_CHARS + 3
        );
    }
}
