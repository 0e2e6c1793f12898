//! Small file-system and hashing primitives the node's state is built on: files
//! replaced whole, removals that accept "already gone", exclusive locks that die
//! with their holder, and a hash that is the same in every build.
use std::{fs::File, io::Write, os::fd::AsRawFd, path::Path};

/// Replaces `path` with `bytes` through a temporary file and a rename, so readers
/// see the old content or the new, never half; with `durable`, the data and the
/// directory entry are on disk before this returns (what survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    write_atomic_as(path, bytes, durable, None)
}

/// As `write_atomic`, the file made with `mode` (0600 for a secret: never readable
/// by others, not even for a moment).
pub fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    durable: bool,
    mode: u32,
) -> std::io::Result<()> {
    write_atomic_as(path, bytes, durable, Some(mode))
}

fn write_atomic_as(
    path: &Path,
    bytes: &[u8],
    durable: bool,
    mode: Option<u32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if let Some(mode) = mode {
        open.mode(mode);
    }
    let mut f = open.open(&tmp)?;
    if let Some(mode) = mode {
        // A temporary file left from before keeps its old mode: set it.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes a file; one already gone (a concurrent DEL, an agent's cleanup) is
/// removed as far as the caller is concerned.
pub fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes a directory tree, gone already being fine.
pub fn remove_dir_all_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Opens (creating) `path` and takes an exclusive `flock` on it; the lock ends when
/// the returned file closes, also when the process is killed. With `wait` false, a
/// lock held elsewhere is `Ok(None)`.
pub fn lock_exclusive(path: &Path, wait: bool) -> std::io::Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher (names derived
/// from it must be the same after an upgrade).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A runtime for one short blocking call from synchronous code (a CLI command, a
/// CNI invocation): current thread, timers and I/O on.
pub fn one_shot_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_removals_accept_gone() {
        let dir = std::env::temp_dir().join(format!("netpath-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.json");
        write_atomic(&f, b"one", true).unwrap();
        write_atomic(&f, b"two", false).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(!dir.join(".x.json.tmp").exists());
        remove_file_if_present(&f).unwrap();
        remove_file_if_present(&f).unwrap();
        let lock = dir.join("lock");
        let held = lock_exclusive(&lock, true).unwrap().unwrap();
        assert!(
            lock_exclusive(&lock, false).unwrap().is_none(),
            "second holder"
        );
        drop(held);
        assert!(lock_exclusive(&lock, false).unwrap().is_some());
        remove_dir_all_if_present(&dir).unwrap();
        remove_dir_all_if_present(&dir).unwrap();
    }

    #[test]
    fn fnv_is_the_published_function() {
        // Test vectors of FNV-1a 64 (the reference's).
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }
}
