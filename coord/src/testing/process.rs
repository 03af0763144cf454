//! The etcd processes and their directories: stopping them, tying their lives to the test,
//! finding the binary, reading their logs, and cleaning up what a killed test left.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::HarnessError;
use tokio::time::Instant;

/// How long `kill` waits after SIGTERM before it sends SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How much of an etcd log an error shows.
pub(super) const LOG_TAIL_LINES: usize = 25;

/// SIGTERM, a grace period, then SIGKILL; reaps the process.
pub(super) async fn terminate(child: &mut Child, name: &str) -> Result<(), HarnessError> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| {
        HarnessError::io(format!("cannot signal etcd member {name}"))(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "its process id does not fit a pid_t",
        ))
    })?;
    // SAFETY: `kill` only sends a signal. `pid` is our own child, which has not been reaped
    // (we hold its `Child` and wait for it only below), so the pid cannot have been reused.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        // Already gone: reaping below is all that is left.
        let _ = child.wait();
        return Ok(());
    }
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
        .kill()
        .map_err(HarnessError::io(format!("cannot kill etcd member {name}")))?;
    child
        .wait()
        .map_err(HarnessError::io(format!("cannot reap etcd member {name}")))?;
    Ok(())
}

/// Makes the child die with SIGKILL when the thread that spawned it exits (with the test).
pub(super) fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe functions may be called: `prctl` and `getppid` are system calls
        // that touch no memory of the parent, and `from_raw_os_error` / `last_os_error` build
        // an error without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then no signal will come.
                if u32::try_from(libc::getppid()) != Ok(parent) {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

pub(super) fn clear_env(command: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            command.env_remove(name);
        }
    }
}

/// The path of `program` on PATH, or an error that says how to install it.
pub(super) fn find_on_path(program: &str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| HarnessError::NotInstalled {
            program: program.to_owned(),
        })
}

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The prefix of every harness directory in the temporary directory.
pub(super) const DIR_PREFIX: &str = "coord-etcd-";
/// The file in a harness directory naming the process that owns it.
pub(super) const OWNER_FILE: &str = "owner.pid";

/// A fresh directory under the system's temporary directory (`TMPDIR`; point it at a tmpfs
/// such as `/dev/shm` for faster tests, at the price of about 64 MB of memory per member for
/// etcd's preallocated WAL), marked with the pid of this process.
///
/// Directories of test processes that were killed (so never dropped theirs) are removed
/// first.
pub(super) fn tempdir() -> Result<tempfile::TempDir, HarnessError> {
    remove_orphaned_dirs();
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .map_err(HarnessError::io("cannot create a temporary directory"))?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()).map_err(
        HarnessError::io(format!("cannot write to {}", dir.path().display())),
    )?;
    Ok(dir)
}

/// Removes harness directories whose owner process no longer exists. Best effort: a directory
/// that cannot be read or removed is left alone.
pub(super) fn remove_orphaned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        // No owner file yet: a directory another process is just creating.
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<libc::pid_t>() else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

pub(super) fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; `kill` only checks that the process exists and that we
    // may signal it.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists but belongs to someone else.
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The last lines of a log file, read from its end.
pub(super) fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))
        .is_err()
    {
        return String::from("(unreadable log)");
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::from("(unreadable log)");
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Waits (up to a second) until every thread of `pid` is stopped. `kill` only marks SIGSTOP
/// pending: a thread that is running handles it when it is next scheduled, and on a loaded
/// machine a request sent right after `pause` was seen answered by an etcd about to stop.
/// Where `/proc` cannot be read it returns at once.
pub(super) fn wait_stopped(pid: libc::pid_t) {
    let stopped = || -> Option<bool> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut all = true;
        for task in tasks {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // The state follows the command name's closing parenthesis: `T` or `t` stopped.
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            all &= matches!(state, 'T' | 't');
        }
        Some(all)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while stopped() == Some(false) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
