//! `StillChanging`: the source files a live rescan left alone because they changed while
//! they were hashed, and when one has been changing long enough to say so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_engine::RelPath;

/// How long a file may keep changing under every read before a warning says it is not
/// being replicated.
pub const WARN_AFTER: Duration = Duration::from_secs(30);

/// Files waiting to hold still, each with when it was first found changing and whether it
/// was warned about.
#[derive(Debug, Default)]
pub struct StillChanging {
    waiting: HashMap<RelPath, (Instant, bool)>,
}

impl StillChanging {
    /// Notes that `path` changed while it was hashed at `now`. Returns how long it has been
    /// changing the first time that reaches [`WARN_AFTER`] (once per stretch of changes).
    pub fn deferred(&mut self, path: &RelPath, now: Instant) -> Option<Duration> {
        let (since, warned) = self.waiting.entry(path.clone()).or_insert((now, false));
        let changing = now.saturating_duration_since(*since);
        if *warned || changing < WARN_AFTER {
            return None;
        }
        *warned = true;
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

    #[test]
    fn warns_once_a_file_has_been_changing_long_enough_and_once_only() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        assert_eq!(c.deferred(&p("log"), t0), None);
        assert_eq!(c.deferred(&p("log"), t0 + WARN_AFTER / 2), None);
        assert_eq!(
            c.deferred(&p("log"), t0 + WARN_AFTER + Duration::from_secs(1)),
            Some(WARN_AFTER + Duration::from_secs(1))
        );
        assert_eq!(c.deferred(&p("log"), t0 + WARN_AFTER * 3), None);
        assert_eq!(c.waiting.len(), 1);
    }

    #[test]
    fn a_settled_file_starts_a_new_stretch() {
        let mut c = StillChanging::default();
        let t0 = Instant::now();
        c.deferred(&p("a"), t0);
        c.deferred(&p("b"), t0);
        c.settled(&p("a"));
        assert_eq!(c.waiting.len(), 1);
        let later = t0 + WARN_AFTER * 2;
        assert_eq!(c.deferred(&p("a"), later), None, "a new stretch starts now");
        assert_eq!(c.deferred(&p("b"), later), Some(WARN_AFTER * 2));
        c.settled(&p("a"));
        c.settled(&p("b"));
        assert!(c.waiting.is_empty());
    }
}
