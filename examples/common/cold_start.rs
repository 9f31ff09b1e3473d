//! Process start to exit and peak resident memory of a child process: what a user waits for and
//! holds when a program loads a model and writes its first token.

use std::process::{Command, Stdio};
use std::time::Instant;

/// Seconds from spawning `cmd` to its exit, and its peak resident memory in MB (10^6 bytes),
/// the kernel's own figure for the child (`wait4`'s `ru_maxrss`). The child must exit 0; its
/// output is discarded (stderr is kept for the error when it fails).
pub fn measure(cmd: &mut Command) -> Result<(f64, f64), String> {
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let err = log.reopen().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let (ok, peak_kib) = wait(child)?;
    let secs = start.elapsed().as_secs_f64();
    if !ok {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(format!("{cmd:?} failed: {}", tail.join(" | ")));
    }
    Ok((secs, peak_kib * 1024.0 / 1e6))
}

/// Waits for `child`: whether it exited 0, and its peak resident memory in KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn wait(child: std::process::Child) -> Result<(bool, f64), String> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the `Child` is dropped, not waited);
    // `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, usage.ru_maxrss as f64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn wait(_: std::process::Child) -> Result<(bool, f64), String> {
    Err("peak memory of a child process is measured on Linux (glibc) only".into())
}
