//! When an initial sync is done: once the target acknowledges the sequence the source's
//! first scan reached. An earlier acknowledgement is not enough: a remote target that kept
//! its place from an earlier run states it as soon as the link is up, often before the
//! scan has found what changed meanwhile.

use ferry_engine::Seq;

/// What is known of a pipeline's first sync: the goal (from the Differ, which answers
/// `CurrentSeq` only once its first scan is done) and the newest acknowledgement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FirstSync {
    goal: Option<Seq>,
    applied: Option<Seq>,
}

impl FirstSync {
    /// Notes the sequence the first scan reached; true once the sync is done.
    pub(crate) fn goal(&mut self, seq: Seq) -> bool {
        self.goal = Some(seq);
        self.done()
    }

    /// Notes an acknowledgement; true once the sync is done.
    pub(crate) fn applied(&mut self, seq: Seq) -> bool {
        self.applied = self.applied.max(Some(seq));
        self.done()
    }

    /// Whether the target acknowledged everything the first scan found.
    pub(crate) fn done(&self) -> bool {
        matches!((self.goal, self.applied), (Some(goal), Some(applied)) if applied >= goal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_before_the_goal_is_known_is_not_the_end() {
        let mut s = FirstSync::default();
        // A remote target states its resume point (21) before the scan found a change (22).
        assert!(!s.applied(Seq(21)));
        assert!(!s.goal(Seq(22)));
        assert!(s.applied(Seq(22)));
    }

    #[test]
    fn a_resume_point_that_is_the_goal_is_the_end() {
        let mut s = FirstSync::default();
        assert!(!s.applied(Seq(21)));
        assert!(s.goal(Seq(21)));
    }

    #[test]
    fn the_newest_acknowledgement_counts() {
        let mut s = FirstSync::default();
        assert!(!s.goal(Seq(5)));
        assert!(!s.applied(Seq(3)));
        assert!(s.applied(Seq(6)));
        // An older acknowledgement arriving late does not undo it.
        assert!(s.applied(Seq(4)));
    }
}
