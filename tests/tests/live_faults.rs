//! Live replication in-process under faults: an event-queue overflow (injected, or real, by
//! holding the actors' thread while the kernel's queue fills) must end in a full rescan that
//! converges with every directory watched, and a panic in the Differ's hashing pool in a
//! restart of the pipeline.

use std::fs;

use ferry_actors::supervisor::{InjectFailures, InjectOverflow, InjectPanic};
use ferry_actors::FolderState;

use crate::util::live::{equals, get, wait_until, LiveFolder, DEADLINE};
use crate::util::*;

#[actix_rt::test]
async fn an_overflow_while_changing_ends_in_a_rescan_that_converges() {
    let f = LiveFolder::start(|src| {
        for i in 0..20 {
            write(&src.join(format!("old/{i}.txt")), format!("old {i}\n"));
        }
    })
    .await;

    for i in 0..50 {
        write(
            &f.s(&format!("burst/{}/{i}.txt", i % 5)),
            format!("new {i}\n"),
        );
        if i == 25 {
            f.sup.do_send(InjectOverflow);
        }
    }
    for i in 0..10 {
        fs::remove_file(f.s(&format!("old/{i}.txt"))).unwrap();
    }
    write(&f.s("old/10.txt"), "rewritten, and longer than before\n");
    f.sup.do_send(InjectOverflow);
    mkdir(&f.s("burst/late/dir"));
    write(&f.s("burst/late/dir/file"), "after the second overflow\n");
    f.settle("changes interleaved with two overflows").await;

    // Watching goes on after the rescans.
    write(&f.s("burst/late/dir/again"), "after the rescans\n");
    f.wait_mirror("a change after the rescans").await;

    assert_eq!(get(&f.stats.restarts), 0, "an overflow is not a failure");
    f.shutdown().await;
}

/// The kernel's inotify queue length (`fs.inotify.max_queued_events`).
fn max_queued_events() -> u64 {
    fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384)
}

#[actix_rt::test]
async fn a_real_overflow_of_the_kernel_queue_leaves_nothing_unwatched() {
    let f = LiveFolder::start(|src| {
        write(&src.join("a"), "a\n");
        write(&src.join("b"), "b\n");
    })
    .await;

    // This thread runs the actors: while it does not yield, the Watcher drains nothing, so
    // notify's thread blocks once the Watcher's buffer (4,096 events) is full and the
    // kernel's queue overflows. One chmod is one event; alternating two files keeps the
    // kernel from merging them. What happens after the overflow is lost, as under real load.
    let events = max_queued_events() + 4_096 + 2_000;
    for i in 0..events {
        let name = if i.is_multiple_of(2) { "a" } else { "b" };
        let mode = if (i / 2).is_multiple_of(2) {
            0o600
        } else {
            0o644
        };
        set_mode(&f.s(name), mode);
    }
    write(
        &f.s("fresh/sub/file"),
        "created while events were being lost\n",
    );
    f.settle("an overflow that lost the creation of fresh/sub")
        .await;

    // The directories created during the overflow must be watched like any other.
    write(&f.s("fresh/sub/after"), "written after the overflow\n");
    f.wait_mirror("writing into a directory created during the overflow")
        .await;

    f.shutdown().await;
}

#[actix_rt::test]
async fn a_panic_in_the_hashing_pool_restarts_the_pipeline() {
    let f = LiveFolder::start(|src| {
        write(&src.join("before.txt"), "before the panic\n");
        write(&src.join("dir/inner.txt"), "inner\n");
    })
    .await;
    assert_eq!(get(&f.stats.restarts), 0);

    f.sup.do_send(InjectPanic);
    wait_until(
        DEADLINE,
        "the supervisor restarted the pipeline once",
        || equals(&f.stats.restarts, 1),
    )
    .await;
    f.wait_state(FolderState::Live).await;
    f.settle("the restart").await;

    write(&f.s("after.txt"), "after the restart\n");
    write(&f.s("dir/sub/after.txt"), "nested, after the restart\n");
    f.settle("changes after the restart").await;

    assert_eq!(get(&f.stats.restarts), 1, "no further restarts");
    f.shutdown().await;
}

/// Several failures reported by one pipeline (an Applier failing on two files in one pass)
/// are one restart: the restart budget counts restarts, not reports.
#[actix_rt::test]
async fn several_failures_of_one_pipeline_are_one_restart() {
    let f = LiveFolder::start(|src| write(&src.join("before.txt"), "before\n")).await;
    assert_eq!(get(&f.stats.restarts), 0);

    f.sup.do_send(InjectFailures { count: 3 });
    wait_until(DEADLINE, "the supervisor restarted the pipeline", || {
        equals(&f.stats.restarts, 1)
    })
    .await;
    f.wait_state(FolderState::Live).await;
    write(&f.s("after.txt"), "after the restart\n");
    f.settle("a change after the restart").await;

    assert_eq!(get(&f.stats.restarts), 1, "three reports, one restart");
    f.shutdown().await;
}
