//! One-syscall opens of a path below a directory that refuse every symlink on the way
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), for the hot paths that would
//! otherwise open each component in turn.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Cleared once the kernel (or a seccomp filter) turns `openat2` down as a whole.
static SUPPORTED: AtomicBool = AtomicBool::new(true);

/// Opens `path` (relative, `/`-separated) below `dir` with `flags`, never following a
/// symlink in any component and never leaving `dir`. `None` when that fails for any reason:
/// the caller falls back to opening one component at a time, which reports the failure
/// precisely (this also covers a kernel without `openat2`, and `EAGAIN` from a concurrent
/// rename).
pub(crate) fn open_dir(dir: &impl AsFd, path: &str, flags: OFlags) -> Option<OwnedFd> {
    if !SUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rfs::openat2(dir, path, flags, Mode::empty(), resolve) {
        Ok(fd) => Some(fd),
        Err(e) => {
            // ENOSYS: kernel before 5.6; EPERM: a sandbox filtering the call out.
            if e == Errno::NOSYS || e == Errno::PERM {
                SUPPORTED.store(false, Ordering::Relaxed);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_root(p: &std::path::Path) -> OwnedFd {
        rfs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    fn dir_flags() -> OFlags {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    #[test]
    fn opens_a_nested_directory() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::fs::write(t.path().join("a/b/c/f"), b"x").unwrap();
        let root = open_root(t.path());
        let fd = open_dir(&root, "a/b/c", dir_flags()).expect("opened");
        let st = rfs::statat(&fd, "f", rfs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(st.st_size, 1);
    }

    #[test]
    fn refuses_a_symlink_anywhere_in_the_path_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a/link")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("a/rel")).unwrap();
        let root = open_root(t.path());
        assert!(open_dir(&root, "a/link", dir_flags()).is_none());
        // Even a symlink that stays inside the root is refused.
        assert!(open_dir(&root, "a/rel", dir_flags()).is_none());
        assert!(open_dir(&root, "a/../..", dir_flags()).is_none());
        assert!(open_dir(&root, "missing/x", dir_flags()).is_none());
        assert!(open_dir(&root, "a/real", dir_flags()).is_some());
    }
}
