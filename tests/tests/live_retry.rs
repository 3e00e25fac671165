//! A live replication that gave up (its restart budget ran out) is tried again, with a
//! fresh budget, after `RestartPolicy::retry_failed_after`: once the cause is gone, it
//! replicates again without anyone restarting it.

use std::fs;
use std::time::Duration;

use ferry_actors::{EventKind, FolderId, FolderState, Replication, RestartPolicy};
use tokio::sync::broadcast::error::RecvError;

use crate::util::live::{mirror_diff, wait_for, DEADLINE};
use crate::util::*;

#[actix_rt::test]
async fn live_a_replication_that_gave_up_is_tried_again_later() {
    let base = tempdir();
    let (src, away, dst) = (
        base.path().join("src"),
        base.path().join("src.away"),
        base.path().join("dst"),
    );
    write(&src.join("a.txt"), "a\n");
    let policy = RestartPolicy {
        max_restarts: 2,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        retry_failed_after: Some(Duration::from_millis(300)),
        ..RestartPolicy::default()
    };
    let replication = Replication::builder(FolderId::new("f").unwrap(), &src)
        .to_dir(&dst)
        .durable(false)
        .restart_policy(policy)
        .start()
        .expect("the replication starts");
    let mut events = replication.subscribe();
    wait_for(DEADLINE, "the initial sync", || {
        let r = mirror_diff(&src, &dst);
        async move { r }
    })
    .await;

    // The source gone for longer than the budget lasts: the replication gives up.
    fs::rename(&src, &away).expect("move the source away");
    let gave_up = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(e) if matches!(&e.kind, EventKind::State { state, .. } if state == "failed") => {
                    return;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the event stream ended"),
            }
        }
    });
    gave_up
        .await
        .expect("the replication gives up within the deadline");

    // Back again: the next try finds it, with no one restarting anything.
    fs::rename(&away, &src).expect("move the source back");
    write(&src.join("b.txt"), "b\n");
    wait_for(
        DEADLINE,
        "the replication is back and mirrors the source",
        || {
            let r = mirror_diff(&src, &dst);
            async move { r }
        },
    )
    .await;
    let state = replication.state().await;
    assert!(
        matches!(state, FolderState::Syncing | FolderState::Live),
        "the replication is {state:?}"
    );
    replication.stop(DEADLINE).await;
}
