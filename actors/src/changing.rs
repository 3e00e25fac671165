//! `StillChanging`: the source files a live rescan left alone because they changed while
//! they were hashed, and when one has been changing long enough to say so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_engine::RelPath;

/// How long a file may keep changing under every read before a warning says it is not
/// being replicated.
pub const WARN_AFTER: Duration = Duration::from_secs(30);

/// A file not found changing for this long has stopped (or is gone, or was renamed away):
/// finding it changing again starts a new stretch.
const GAP: Duration = Duration::from_secs(10);

/// Past this many files, those past their [`GAP`] are forgotten (a file written and then
/// renamed away is never settled by name).
const PRUNE_AT: usize = 1024;

/// One file's stretch of changes.
#[derive(Clone, Copy, Debug)]
struct Stretch {
    since: Instant,
    last: Instant,
    warned: bool,
}

/// Files waiting to hold still.
#[derive(Debug, Default)]
pub struct StillChanging {
    waiting: HashMap<RelPath, Stretch>,
}

impl StillChanging {
    /// Notes that `path` changed while it was hashed at `now`. Returns how long it has been
    /// changing the first time that reaches [`WARN_AFTER`] (once per stretch of changes).
    pub fn deferred(&mut self, path: &RelPath, now: Instant) -> Option<Duration> {
        if self.waiting.len() >= PRUNE_AT {
            self.waiting
                .retain(|_, s| now.saturating_duration_since(s.last) <= GAP);
        }
        let fresh = Stretch {
            since: now,
            last: now,
            warned: false,
        };
        let s = self.waiting.entry(path.clone()).or_insert(fresh);
        if now.saturating_duration_since(s.last) > GAP {
            *s = fresh;
        }
        s.last = now;
        let changing = now.saturating_duration_since(s.since);
        if s.warned || changing < WARN_AFTER {
            return None;
        }
        s.warned = true;
        Some(changing)
    }

    /// Notes that `path` was hashed (or is gone): it no longer waits.
    pub fn settled(&mut self, path: &RelPath) {
        if !self.waiting.is_empty() {
            self.waiting.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// `path` found changing every second from `from` for `secs` seconds; the warnings, as
    /// (seconds after `from`, how long it was said to be changing).
    fn every_second(
        c: &mut StillChanging,
        path: &str,
        from: Instant,
        secs: u64,
    ) -> Vec<(u64, u64)> {
        (0..=secs)
            .filter_map(|s| {
                c.deferred(&p(path), from + Duration::from_secs(s))
                    .map(|d| (s, d.as_secs()))
            })
            .collect()
    }

    #[test]
    fn warns_once_a_file_has_been_changing_long_enough_and_once_only() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        assert_eq!(every_second(&mut c, "log", t0, 90), [(30, 30)]);
        assert_eq!(c.waiting.len(), 1);
    }

    #[test]
    fn a_settled_file_starts_a_new_stretch() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        every_second(&mut c, "a", t0, 20);
        c.settled(&p("a"));
        assert!(c.waiting.is_empty());
        let later = t0 + Duration::from_secs(21);
        assert!(every_second(&mut c, "a", later, 20).is_empty());
        assert_eq!(
            every_second(&mut c, "a", later + Duration::from_secs(21), 20),
            [(9, 30)]
        );
    }

    #[test]
    fn a_file_found_changing_again_after_a_gap_starts_a_new_stretch() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        // A temp file written now and then under the same name, never settled by name.
        every_second(&mut c, "x.tmp", t0, 5);
        let after_gap = t0 + Duration::from_secs(5) + GAP + Duration::from_secs(1);
        // Counted from `after_gap`, not from `t0`: the warning comes 30 s after it.
        assert_eq!(every_second(&mut c, "x.tmp", after_gap, 40), [(30, 30)]);
    }

    #[test]
    fn files_past_their_gap_are_forgotten_once_many_wait() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            c.deferred(&p(&format!("f{i}")), t0);
        }
        assert_eq!(c.waiting.len(), PRUNE_AT);
        c.deferred(&p("new"), t0 + GAP + Duration::from_secs(1));
        assert_eq!(c.waiting.len(), 1);
    }
}
