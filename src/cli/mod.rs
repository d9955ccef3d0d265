//! Subcommands of the `weightmap` binary, one file each.

pub mod apply;
pub mod delegate;
pub mod diff;
pub mod explain;
pub mod export;
pub mod flags;
pub mod inspect;
pub mod map;
pub mod report;
#[cfg(feature = "libtorch")]
pub mod trace;
pub mod tree;
#[cfg(feature = "libtorch")]
pub mod verify;

/// Exit status when a check ran and failed (`verify`; `map --fail-on`), distinct from
/// "could not run" (1: I/O, unreadable or corrupt input; 2: bad arguments).
pub const EXIT_CHECK_FAILED: i32 = 3;

/// Exit status for an error: 2 for bad arguments, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<weightmap::Error>() {
        Some(weightmap::Error::InvalidArgument { .. }) => 2,
        _ => 1,
    }
}
