//! The libtorch layer: everything that calls into libtorch, and nothing of any stage.
//!
//! - [`ffi`]: a loaded TorchScript module through the C++ shim (`shim.cpp`): its state
//!   dict with buffers and hierarchy, `forward`, and the raw tensor uses behind the static
//!   and dynamic execution orders;
//! - [`inputs`]: seeded dummy input tensors from [`crate::input::InputSpec`]s;
//! - devices ([`check_device`], [`tch_device`]) and dtypes ([`kind`]), translated from
//!   weightmap's own [`Device`] and [`DType`];
//! - the CUDA backend, loaded on demand ([`load_cuda_backend`]).
//!
//! Stages call this layer; it calls none of them.

pub mod ffi;
pub mod inputs;

pub use ffi::{ScriptModule, StateEntry};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use tch::Kind;

/// The library that registers libtorch's CUDA backend when it is loaded.
const CUDA_BACKEND_LIBRARY: &str = "libtorch_cuda.so";

/// Loads libtorch's CUDA backend (`libtorch_cuda.so`, found through the binary's rpath or
/// `LD_LIBRARY_PATH`) once per process, and says why when it cannot.
///
/// Why at run time: linking it makes every command pay ~0.3 s and ~350 MB to load the
/// CUDA libraries even when it only reads headers; and the linker's `--as-needed` would
/// drop it anyway, since nothing references it, leaving CUDA silently unavailable. Loading
/// it with `RTLD_GLOBAL` before the first CUDA call registers the backend for real.
pub fn load_cuda_backend() -> std::result::Result<(), String> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let name = std::ffi::CString::new(CUDA_BACKEND_LIBRARY).expect("no NUL in the name");
            // SAFETY: dlopen with a valid C string; the handle is kept for the process' life.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a thread-local C string or null.
                let reason = unsafe {
                    let e = libc::dlerror();
                    if e.is_null() {
                        "unknown reason".to_string()
                    } else {
                        std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                    }
                };
                Err(format!("cannot load {CUDA_BACKEND_LIBRARY}: {reason} (this libtorch has no CUDA backend?)"))
            } else {
                Ok(())
            }
        })
        .clone()
}

/// True when libtorch sees a usable CUDA device (loading the CUDA backend first).
pub fn cuda_is_available() -> bool {
    load_cuda_backend().is_ok() && ffi::cuda_is_available()
}

/// Checks that `device` exists on this machine: CUDA asked for where there is none is an
/// error, not a quiet CPU run.
pub fn check_device(device: Device) -> Result<()> {
    let Device::Cuda(index) = device else {
        return Ok(());
    };
    let count = if cuda_is_available() {
        tch::Cuda::device_count()
    } else {
        0
    };
    if count <= 0 {
        return Err(Error::invalid(
            "device",
            format!("'{device}' requested, but CUDA is not available on this machine (libtorch finds no CUDA device or driver); use cpu"),
        ));
    }
    if index as i64 >= count {
        return Err(Error::invalid(
            "device",
            format!("'{device}': this machine has {count} CUDA device(s), numbered from 0"),
        ));
    }
    Ok(())
}

/// The tch device of a weightmap device.
pub fn tch_device(device: Device) -> tch::Device {
    match device {
        Device::Cpu => tch::Device::Cpu,
        Device::Cuda(i) => tch::Device::Cuda(i),
    }
}

/// The tch kind of a dtype, where tch has one.
pub fn kind(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        DType::C64 => Kind::ComplexFloat,
        DType::C128 => Kind::ComplexDouble,
        DType::F8E4M3 => Kind::Float8e4m3fn,
        DType::F8E5M2 => Kind::Float8e5m2,
        _ => return None,
    })
}

/// The tch kind of a torch dtype name (`float32`).
pub fn kind_of(dtype: &str) -> Option<Kind> {
    DType::parse(dtype).and_then(kind)
}

/// A libtorch error, on one line, in the context of `doing`.
pub fn torch_error(doing: impl std::fmt::Display, e: tch::TchError) -> Error {
    Error::Torch {
        context: doing.to_string(),
        message: ffi::one_line(&e.to_string()),
    }
}
