//! glibc's allocator, tuned for a process that relays large buffers.
//!
//! With glibc's defaults the connector path (h2 frames, TLS records, read
//! buffers of 64-256 KiB) hands freed memory back to the kernel and faults it
//! in again for the next frame: `sysmalloc`, `do_anonymous_page` and
//! `clear_page_erms` took 4-6% of the edge and of the connector. Keeping up
//! to 64 MiB of freed memory and serving blocks under 4 MiB from the heap
//! cut the connector path's CPU per GiB by 15-20% and raised its throughput
//! by 10-30% (benches/README.md), for 2-3 MiB more resident memory after a
//! transfer and none while idle.
//!
//! glibc reads `GLIBC_TUNABLES` only when a program starts, and setting them
//! from inside (`mallopt`) would need `unsafe` outside `relay`, so the
//! long-running commands (`run`, `connector`) re-execute themselves once with
//! them set: the same process (PID, descriptors, systemd's notify socket),
//! a fresh image. An operator who sets `GLIBC_TUNABLES` (an empty value
//! included) keeps exactly that.

/// What `run` and `connector` set when the environment does not.
pub const TUNABLES: &str =
    "glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=4194304:glibc.malloc.top_pad=16777216";

/// Set in the re-executed image, so it never tries again: glibc erases
/// malloc tunables from the environment of a program that runs with file
/// capabilities (`setcap cap_net_bind_service`), which would otherwise look
/// like "not set yet" forever.
const MARK: &str = "FTPGATE_MALLOC_TUNED";

/// Re-executes this program with [`TUNABLES`] unless they (or the operator's
/// own) are in place; returns only when it does not (not glibc, already
/// tuned, or the exec failed, which leaves glibc's defaults: slower, not
/// wrong).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() || std::env::var_os(MARK).is_some() {
            return;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "ftpgate".into());
        // /proc/self/exe is this very binary even if the file was replaced
        // on disk since it started (an upgrade in progress).
        let _err = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", TUNABLES)
            .env(MARK, "1")
            .exec();
    }
}

/// For the start-up log line: which allocator settings this process runs under.
pub fn state() -> &'static str {
    if std::env::var_os(MARK).is_some() {
        "tuned"
    } else if std::env::var_os("GLIBC_TUNABLES").is_some() {
        "GLIBC_TUNABLES from the environment"
    } else {
        "glibc defaults"
    }
}
