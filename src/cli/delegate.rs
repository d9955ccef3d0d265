//! A `weightmap` built without libtorch starts in milliseconds, since it does not load
//! libtorch's ~1 GB of shared libraries; what needs libtorch (tracing, verifying, loading a
//! TorchScript model, a CUDA device) it hands to its libtorch build,
//! `weightmap-torch` beside it (`scripts/build.sh` builds both), by replacing itself with
//! that binary, same arguments: no output has been written when it does.

#[cfg(not(feature = "libtorch"))]
use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf};

#[cfg(not(feature = "libtorch"))]
/// Names the libtorch build explicitly (a path), instead of `weightmap-torch` beside this
/// binary.
const TORCH_BIN_VAR: &str = "WEIGHTMAP_TORCH_BIN";

/// Set in the environment of the libtorch build this binary starts, so that a
/// `WEIGHTMAP_TORCH_BIN` pointing back at a build without libtorch cannot loop.
const DELEGATED_VAR: &str = "WEIGHTMAP_DELEGATED";

/// Set, with [`DELEGATED_VAR`], when what is handed over is a TorchScript model's execution
/// order that a first mapping found it needs: what that mapping left for the order to
/// settle. The libtorch build then traces at once ([`order_needed`]).
const ORDER_NEEDED_VAR: &str = "WEIGHTMAP_ORDER_NEEDED";

/// In the libtorch build started by [`hand_over`]: what the build without libtorch found
/// that only the execution order settles (`MapRequest::order_needed`).
pub fn order_needed() -> Option<String> {
    std::env::var_os(DELEGATED_VAR)?;
    std::env::var(ORDER_NEEDED_VAR).ok()
}

#[cfg(not(feature = "libtorch"))]
/// The arguments of a command this build cannot run, taken as they are and handed on.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    rest: Vec<OsString>,
}

#[cfg(not(feature = "libtorch"))]
/// The libtorch build: `$WEIGHTMAP_TORCH_BIN`, else `weightmap-torch` beside this binary.
fn torch_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(TORCH_BIN_VAR) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let sibling = exe.with_file_name("weightmap-torch");
    sibling.is_file().then_some(sibling)
}

#[cfg(not(feature = "libtorch"))]
/// Replaces this process by the libtorch build, with the same arguments, because `what`
/// needs libtorch (and, for an execution order, what the order is `needed` for); returns
/// only when that cannot be done, with an error that says what to do.
pub fn hand_over(what: &str, needed: Option<&str>) -> anyhow::Error {
    let why = format!("{what} needs libtorch, and this weightmap is the build without it");
    let found = if std::env::var_os(DELEGATED_VAR).is_some() {
        None
    } else {
        torch_binary()
    };
    let Some(binary) = found else {
        return anyhow::anyhow!(
            "{why}; no libtorch build of weightmap was found (`weightmap-torch` beside this binary, or ${TORCH_BIN_VAR}): build both with scripts/build.sh"
        );
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(&binary);
    // The name the user typed, for usage lines and messages.
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    command.args(args).env(DELEGATED_VAR, "1");
    match needed {
        Some(needed) => command.env(ORDER_NEEDED_VAR, needed),
        None => command.env_remove(ORDER_NEEDED_VAR),
    };
    let error = command.exec();
    anyhow::anyhow!("{why}; could not start {}: {error}", binary.display())
}
