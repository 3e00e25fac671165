//! Replaced files released on threads of their own, and waiting until their space is free.
//!
//! Freeing a large replaced file takes a while (its cached pages, its blocks), so the
//! Applier drops it off the hot path. Something that needs that space counted (the free
//! space measured before files held back for lack of it are tried again) waits here first.

use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Replaced files being released now, with a signal when one is done.
static RELEASING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Drops `old` (the last descriptor of a replaced file) on a thread of its own; here if no
/// thread can be started.
pub(crate) fn release_apart(old: OwnedFd) {
    let (count, _) = &RELEASING;
    *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    let spawned = std::thread::Builder::new()
        .name("ferry-release".into())
        .spawn(move || {
            drop(old);
            released();
        });
    // Not started: the closure, and `old` with it, was dropped already.
    if spawned.is_err() {
        released();
    }
}

fn released() {
    let (count, done) = &RELEASING;
    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
    *n = n.saturating_sub(1);
    done.notify_all();
}

/// Blocks until no replaced file is being released, or `limit` has passed; true if none is.
pub(crate) fn wait_for_releases(limit: Duration) -> bool {
    let (count, done) = &RELEASING;
    let deadline = Instant::now() + limit;
    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = done
            .wait_timeout(n, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_returns_once_every_released_file_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        release_apart(fd);
        assert!(wait_for_releases(Duration::from_secs(30)));
        assert_eq!(*RELEASING.0.lock().unwrap(), 0);
    }
}
