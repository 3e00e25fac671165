//! An acknowledgement cut to fit one frame: the paths not applied and a dry run's plan can
//! be any length, and a frame over the limit would end the session at every try.

use ferry_actors::messages::{Applied, SkippedPath};
use ferry_actors::wire::encoded_len;

/// `msg` as it may travel in a frame of at most `budget` bytes of CBOR. When it is larger,
/// its list of paths not applied keeps what fits in half the budget, and a dry run's plan
/// the actions that fit in the rest; each cut is said in a last entry of that list (so
/// the run ends as one with paths not applied: it is not the whole story).
pub fn fit_applied(mut msg: Applied, budget: u64) -> Applied {
    if encoded_len(&msg) <= budget {
        return msg;
    }
    let half = budget / 2;
    let skipped = std::mem::take(&mut msg.skipped);
    let total = skipped.len();
    let (kept, _) = take_fitting(skipped, half);
    msg.skipped = kept;
    if msg.skipped.len() < total {
        msg.skipped.push(SkippedPath {
            path: format!("({} more)", total - msg.skipped.len()),
            reason:
                "not listed here: the list did not fit one message (the target's log names each)"
                    .into(),
        });
    }
    if let Some(plan) = msg.dry_run_plan.as_mut() {
        let actions = std::mem::take(&mut plan.actions);
        let total = actions.len();
        let (kept, _) = take_fitting(actions, half);
        plan.actions = kept;
        if plan.actions.len() < total {
            msg.skipped.push(SkippedPath {
                path: "(dry run)".into(),
                reason: format!(
                    "the plan shown is its first {} of {total} actions: the rest did not fit one message",
                    plan.actions.len()
                ),
            });
        }
    }
    msg
}

/// The first items of `items` whose encoded sizes add up to at most `budget`, and that sum.
fn take_fitting<T: serde::Serialize>(items: Vec<T>, budget: u64) -> (Vec<T>, u64) {
    let mut used = 0;
    let mut kept = Vec::new();
    for item in items {
        let len = encoded_len(&item);
        if used + len > budget {
            break;
        }
        used += len;
        kept.push(item);
    }
    (kept, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_actors::messages::ApplyCounts;
    use ferry_actors::FolderId;
    use ferry_engine::{Action, Plan, RelPath, Seq};

    fn applied(skipped: usize, actions: usize) -> Applied {
        Applied {
            folder: FolderId::new("f").unwrap(),
            seq: Seq(7),
            skipped: (0..skipped)
                .map(|i| SkippedPath {
                    path: format!("dir/file-{i:06}"),
                    reason: "no space left on device".into(),
                })
                .collect(),
            dry_run_plan: (actions > 0).then(|| Plan {
                actions: (0..actions)
                    .map(|i| Action::MakeDir {
                        path: RelPath::new(format!("d/{i:06}")).unwrap(),
                    })
                    .collect(),
            }),
            counts: ApplyCounts::default(),
        }
    }

    #[test]
    fn a_message_that_fits_is_left_alone() {
        let msg = applied(10, 10);
        let fitted = fit_applied(msg.clone(), 1 << 20);
        assert_eq!(fitted.skipped, msg.skipped);
        assert_eq!(fitted.dry_run_plan, msg.dry_run_plan);
    }

    #[test]
    fn long_lists_are_cut_to_the_budget_and_say_so() {
        let budget = 64 << 10;
        let msg = applied(20_000, 20_000);
        assert!(encoded_len(&msg) > 10 * budget);
        let fitted = fit_applied(msg, budget);
        assert!(
            encoded_len(&fitted) <= budget + 1024,
            "{}",
            encoded_len(&fitted)
        );
        let plan = fitted.dry_run_plan.as_ref().unwrap();
        assert!(plan.actions.len() > 100 && plan.actions.len() < 20_000);
        // The kept entries are the first ones, in order, and the cuts are named last.
        assert_eq!(fitted.skipped[0].path, "dir/file-000000");
        let notes: Vec<&str> = fitted
            .skipped
            .iter()
            .rev()
            .take(2)
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(notes[0], "(dry run)");
        assert!(notes[1].ends_with("more)"), "{notes:?}");
        let listed = fitted.skipped.len() - 2;
        assert_eq!(notes[1], format!("({} more)", 20_000 - listed));
    }
}
