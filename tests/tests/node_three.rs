//! Three `ferry run` nodes on loopback: A sends `alpha` to B and C and `beta` to B. They
//! converge; C stopped goes offline in A's status while B keeps up, and catches up when it
//! comes back on the same port; A restarted re-reads and resends nothing and rewrites no
//! receiver file; a folder added by SIGHUP on both sides converges without disturbing the
//! others.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use crate::util::node::{
    all_in_sync, brief_status, state_of, target, wait_mirror, NodeProcess, DEADLINE,
};
use crate::util::remote::node_id;
use crate::util::*;

/// A's peer targets as its status names them.
const TO_B: &str = "peer:B";
const TO_C: &str = "peer:C";

/// The directories of one test run, all under one temporary directory.
struct Layout {
    _base: tempfile::TempDir,
    root: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let base = tempdir();
        let root = base.path().canonicalize().expect("canonical temp dir");
        Layout { _base: base, root }
    }

    /// `ROOT/node/folder`: a node's copy of a folder.
    fn folder(&self, node: &str, folder: &str) -> PathBuf {
        self.root.join(node).join(folder)
    }

    /// A node's identity home.
    fn home(&self, node: &str) -> PathBuf {
        self.root.join("homes").join(node)
    }

    /// A node's state directory.
    fn state(&self, node: &str) -> PathBuf {
        self.root.join("state").join(node)
    }

    /// Where config files and logs go.
    fn conf(&self) -> PathBuf {
        self.root.join("conf")
    }
}

/// `p` as a TOML basic string (temporary paths hold no quotes or backslashes).
fn q(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 temp path");
    assert!(!s.contains(['"', '\\']), "unexpected character in {s}");
    format!("\"{s}\"")
}

/// `[node]` for `name`: home and state under the layout, no fsync, and `listen` and
/// `dashboard` as given (`None` leaves the key out).
fn node_table(l: &Layout, name: &str, listen: Option<&str>, dashboard: &str) -> String {
    let listen = listen.map_or_else(String::new, |a| format!("listen = \"{a}\"\n"));
    format!(
        "[node]\nname = \"{name}\"\nhome = {}\nstate_dir = {}\ndashboard = \"{dashboard}\"\nfsync = false\n{listen}",
        q(&l.home(name)),
        q(&l.state(name)),
    )
}

fn peer_table(name: &str, id: &str, port: Option<u16>) -> String {
    let address = port.map_or_else(String::new, |p| format!("address = \"127.0.0.1:{p}\"\n"));
    format!("\n[[peer]]\nname = \"{name}\"\nid = \"{id}\"\n{address}")
}

fn folder_table(l: &Layout, node: &str, id: &str, role: &str, peers: &[&str]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "\n[[folder]]\nid = \"{id}\"\npath = {}\nrole = \"{role}\"\npeers = [{}]\n",
        q(&l.folder(node, id)),
        peers.join(", ")
    )
}

/// The node ids of A, B and C.
struct Ids {
    a: String,
    b: String,
    c: String,
}

/// A: sends alpha to B and C, beta (and gamma when `gamma`) to B; dashboard on.
fn a_config(l: &Layout, ids: &Ids, b_port: u16, c_port: u16, gamma: bool) -> String {
    let mut text = node_table(l, "A", None, "127.0.0.1:0");
    text += &peer_table("B", &ids.b, Some(b_port));
    text += &peer_table("C", &ids.c, Some(c_port));
    text += &folder_table(l, "A", "alpha", "send", &["B", "C"]);
    text += &folder_table(l, "A", "beta", "send", &["B"]);
    if gamma {
        text += &folder_table(l, "A", "gamma", "send", &["B"]);
    }
    text
}

/// B: receives alpha and beta (and gamma when `gamma`) from A.
fn b_config(l: &Layout, ids: &Ids, port: u16, gamma: bool) -> String {
    let mut text = node_table(l, "B", Some(&format!("127.0.0.1:{port}")), "off");
    text += &peer_table("A", &ids.a, None);
    text += &folder_table(l, "B", "alpha", "receive", &["A"]);
    text += &folder_table(l, "B", "beta", "receive", &["A"]);
    if gamma {
        text += &folder_table(l, "B", "gamma", "receive", &["A"]);
    }
    text
}

/// C: receives alpha from A.
fn c_config(l: &Layout, ids: &Ids, port: u16) -> String {
    let mut text = node_table(l, "C", Some(&format!("127.0.0.1:{port}")), "off");
    text += &peer_table("A", &ids.a, None);
    text += &folder_table(l, "C", "alpha", "receive", &["A"]);
    text
}

/// Fills `root` with 36 small files in nested directories and one ~3 MiB file, all with
/// fixed mtimes; `seed` makes the contents differ between folders.
fn fill(root: &Path, seed: u64) {
    for d in 0..4u64 {
        for s in 0..3u64 {
            for f in 0..3u64 {
                let n = d * 9 + s * 3 + f;
                write_file(
                    &root.join(format!("d{d}/s{s}/f{f}.txt")),
                    format!("folder {seed}, file {n}\n").repeat(1 + n as usize),
                    0o644,
                    time_n(seed * 100 + n),
                );
            }
        }
    }
    write_file(
        &root.join("big.bin"),
        pseudo_random(3 * MIB as usize + 1234, seed),
        0o644,
        time_n(seed * 100 + 99),
    );
}

/// The peer targets of A and their counters that must stay zero after a restart.
const QUIET_COUNTERS: [&str; 3] = ["bytes_hashed", "bytes_sent", "entries_sent"];

/// `Ok` when A's status shows `target` of `folder` in `want`.
fn target_is(status: &Value, folder: &str, name: &str, want: &str) -> Result<(), String> {
    let t = target(status, folder, name)?;
    if state_of(t) == want {
        Ok(())
    } else {
        Err(format!("{folder} → {name} is {}, not {want}", t["state"]))
    }
}

#[test]
fn three_nodes_converge_survive_restarts_and_reload() {
    let started = Instant::now();
    let l = Layout::new();
    for (node, folders) in [
        ("A", &["alpha", "beta", "gamma"][..]),
        ("B", &["alpha", "beta", "gamma"][..]),
        ("C", &["alpha"][..]),
    ] {
        for f in folders {
            mkdir(&l.folder(node, f));
        }
    }
    fill(&l.folder("A", "alpha"), 1);
    fill(&l.folder("A", "beta"), 2);
    let ids = Ids {
        a: node_id(&l.home("A")),
        b: node_id(&l.home("B")),
        c: node_id(&l.home("C")),
    };
    let conf = l.conf();

    // Receivers first, on free ports; then each config is rewritten with the port it got,
    // so that a restart or a reload keeps it.
    let mut b = NodeProcess::start(&conf, "B", &b_config(&l, &ids, 0, false), &[]);
    let mut c = NodeProcess::start(&conf, "C", &c_config(&l, &ids, 0), &[]);
    let b_port = b.listen.expect("B listens").port();
    let c_port = c.listen.expect("C listens").port();
    assert_eq!(b.node_id.as_deref(), Some(ids.b.as_str()));
    assert_eq!(c.node_id.as_deref(), Some(ids.c.as_str()));
    write_config_of(&b, &b_config(&l, &ids, b_port, false));
    write_config_of(&c, &c_config(&l, &ids, c_port));
    let a_text = a_config(&l, &ids, b_port, c_port, false);
    let mut a = NodeProcess::start(&conf, "A", &a_text, &[]);

    // 1. Everything converges, and A says so.
    let pairs = [("alpha", "B"), ("alpha", "C"), ("beta", "B")];
    for (folder, node) in pairs {
        wait_mirror(
            &mut [&mut a, &mut b, &mut c],
            &l.folder("A", folder),
            &l.folder(node, folder),
            &format!("the initial sync of {folder} to {node}"),
        );
    }
    a.wait_status(DEADLINE, "every target of A is in sync", |s| {
        all_in_sync(s, "send")?;
        for (folder, name) in [("alpha", TO_B), ("alpha", TO_C), ("beta", TO_B)] {
            target(s, folder, name)?;
        }
        Ok(())
    });
    eprintln!("step 1 (initial sync) done after {:?}", started.elapsed());

    // 2. C goes down; A's changes reach B, and A shows C offline with a reason.
    c.stop();
    let alpha = l.folder("A", "alpha");
    write(&alpha.join("new/fresh.txt"), "created while C is down\n");
    write(&alpha.join("d0/added.txt"), "another new file\n");
    write(&alpha.join("d1/s0/f2.txt"), "rewritten content\n");
    let mut big = std::fs::read(alpha.join("big.bin")).unwrap();
    big[MIB as usize..MIB as usize + 100].fill(0xAB);
    write(&alpha.join("big.bin"), &big);
    std::fs::remove_file(alpha.join("d2/s1/f0.txt")).unwrap();
    std::fs::rename(alpha.join("d3"), alpha.join("d3-renamed")).unwrap();
    wait_mirror(
        &mut [&mut a, &mut b],
        &alpha,
        &l.folder("B", "alpha"),
        "changes to alpha while C is down",
    );
    let status = a.wait_status(DEADLINE, "A shows C offline and B in sync", |s| {
        target_is(s, "alpha", TO_C, "offline")?;
        target_is(s, "alpha", TO_B, "in-sync")?;
        target_is(s, "beta", TO_B, "in-sync")
    });
    let reason = target(&status, "alpha", TO_C).unwrap()["state"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !reason.trim().is_empty(),
        "C's target is offline without a reason: {}",
        brief_status(&status)
    );
    eprintln!(
        "step 2 (C down, offline: {reason:?}) done after {:?}",
        started.elapsed()
    );

    // 3. C comes back on the same port with the same state and catches up.
    c.restart(Some(&c_config(&l, &ids, c_port)));
    assert_eq!(c.listen.map(|a| a.port()), Some(c_port));
    wait_mirror(
        &mut [&mut a, &mut c],
        &alpha,
        &l.folder("C", "alpha"),
        "C's restart",
    );
    a.wait_status(
        DEADLINE,
        "every target of A is in sync after C's restart",
        |s| all_in_sync(s, "send"),
    );
    eprintln!("step 3 (C caught up) done after {:?}", started.elapsed());

    // 4. A restarts: its saved indexes and epochs mean nothing is hashed or sent again,
    // and no receiver file is rewritten. What goes wrong is collected, so that step 5 still
    // runs, and reported at the end.
    let mut failures = Vec::new();
    let receivers = [("alpha", "B"), ("beta", "B"), ("alpha", "C")];
    let before: Vec<Snapshot> = receivers
        .iter()
        .map(|(f, n)| files_of(snapshot(&l.folder(n, f))))
        .collect();
    // Directory mtimes are not part of a mirror check; when they differ here, A's index
    // is behind its disk and the restart will find (and send) the difference.
    let stale_dirs: Vec<String> = receivers
        .iter()
        .flat_map(|(f, n)| {
            let a_side = snapshot(&l.folder("A", f));
            let r_side = snapshot(&l.folder(n, f));
            diff_snapshots(&a_side, &r_side, Compare::MIRROR_ALL_MTIMES, ("A", n))
                .into_iter()
                .map(move |d| format!("{f}: {d}"))
        })
        .collect();
    a.stop();
    a.restart(None);
    let status = a.wait_status(
        DEADLINE,
        "every target of A is in sync after A's restart",
        |s| {
            all_in_sync(s, "send")?;
            for (folder, name) in [("alpha", TO_B), ("alpha", TO_C), ("beta", TO_B)] {
                let t = target(s, folder, name)?;
                // The link came up again: the peers answered with what they hold.
                if t["counters"]["wire_bytes_in"].as_u64().unwrap_or(0) == 0 {
                    return Err(format!("{folder} → {name} has not heard from its peer yet"));
                }
            }
            Ok(())
        },
    );
    for f in status["folders"].as_array().unwrap() {
        for t in f["targets"].as_array().unwrap() {
            for counter in QUIET_COUNTERS {
                let v = t["counters"][counter].as_u64();
                if v != Some(0) {
                    failures.push(format!(
                        "after A's restart, {} → {}: {counter} = {v:?}, not 0",
                        f["id"], t["name"]
                    ));
                }
            }
        }
    }
    for ((f, n), before) in receivers.iter().zip(&before) {
        let after = files_of(snapshot(&l.folder(n, f)));
        let diffs = diff_snapshots(before, &after, Compare::IDENTICAL, ("before", "after"));
        failures.extend(
            diffs
                .into_iter()
                .map(|d| format!("after A's restart, {n}/{f} file rewritten: {d}")),
        );
    }
    if !failures.is_empty() {
        failures.push(format!(
            "directory mtimes that differed between A and its receivers before A's restart: \
             {stale_dirs:#?}\nA's status after the restart: {}\n{}\n{}\n{}",
            brief_status(&status),
            a.describe(),
            b.describe(),
            c.describe()
        ));
    }
    eprintln!("step 4 (A restarted) done after {:?}", started.elapsed());

    // 5. A folder added by SIGHUP: B learns to receive it first, then A to send it.
    fill(&l.folder("A", "gamma"), 3);
    let b_reloads = b.stderr().matches("config reloaded").count();
    write_config_of(&b, &b_config(&l, &ids, b_port, true));
    b.sighup();
    b.wait_log_count("config reloaded", b_reloads + 1, DEADLINE);
    let a_reloads = a.stderr().matches("config reloaded").count();
    write_config_of(&a, &a_config(&l, &ids, b_port, c_port, true));
    a.sighup();
    a.wait_log_count("config reloaded", a_reloads + 1, DEADLINE);
    wait_mirror(
        &mut [&mut a, &mut b],
        &l.folder("A", "gamma"),
        &l.folder("B", "gamma"),
        "gamma added by SIGHUP",
    );
    write(&alpha.join("after-reload.txt"), "alpha still replicates\n");
    write(
        &l.folder("A", "beta").join("d0/after-reload.txt"),
        "so does beta\n",
    );
    for (folder, node) in pairs {
        wait_mirror(
            &mut [&mut a, &mut b, &mut c],
            &l.folder("A", folder),
            &l.folder(node, folder),
            &format!("a change to {folder} after the reload"),
        );
    }
    a.wait_status(
        DEADLINE,
        "every target of A, gamma's too, is in sync",
        |s| {
            all_in_sync(s, "send")?;
            target_is(s, "gamma", TO_B, "in-sync")
        },
    );
    eprintln!(
        "step 5 (gamma added by SIGHUP) done after {:?}",
        started.elapsed()
    );

    a.stop();
    b.stop();
    c.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The regular files of a snapshot: what a restart of the sender must not rewrite.
fn files_of(mut snap: Snapshot) -> Snapshot {
    snap.retain(|_, node| node.kind == Kind::File);
    snap
}

/// Rewrites the config file `node` runs from (to be read on its next reload or restart).
fn write_config_of(node: &NodeProcess, text: &str) {
    write(&node.config, text);
}

/// A sends `alpha` to B (dashboard on both); B is started first, and its config rewritten
/// with the port it got so that a restart keeps it.
fn sender_and_receiver(l: &Layout) -> (NodeProcess, NodeProcess) {
    let ids = Ids {
        a: node_id(&l.home("A")),
        b: node_id(&l.home("B")),
        c: String::new(),
    };
    let conf = l.conf();
    let b_text = |port: u16| {
        let mut text = node_table(l, "B", Some(&format!("127.0.0.1:{port}")), "127.0.0.1:0");
        text += &peer_table("A", &ids.a, None);
        text += &folder_table(l, "B", "alpha", "receive", &["A"]);
        text
    };
    let b = NodeProcess::start(&conf, "B", &b_text(0), &[]);
    let port = b.listen.expect("B listens").port();
    write_config_of(&b, &b_text(port));
    let mut a_text = node_table(l, "A", None, "127.0.0.1:0");
    a_text += &peer_table("B", &ids.b, Some(port));
    a_text += &folder_table(l, "A", "alpha", "send", &["B"]);
    let a = NodeProcess::start(&conf, "A", &a_text, &[]);
    (a, b)
}

/// [`sender_and_receiver`] for `alpha` filled with `seed`, once B mirrors A; with both
/// folders (source, target).
fn synced_pair(l: &Layout, seed: u64) -> (NodeProcess, NodeProcess, PathBuf, PathBuf) {
    let (src, dst) = (l.folder("A", "alpha"), l.folder("B", "alpha"));
    mkdir(&src);
    mkdir(&dst);
    fill(&src, seed);
    let (mut a, mut b) = sender_and_receiver(l);
    wait_mirror(&mut [&mut a, &mut b], &src, &dst, "the initial sync");
    (a, b, src, dst)
}

/// A sender killed (no clean stop) may not have saved its last entries: after its restart
/// a receiver must still converge, deletions made while the sender was down included,
/// because an index from an unclean stop is not trusted for deltas.
#[test]
fn a_killed_sender_restarts_into_a_full_index_and_converges() {
    let l = Layout::new();
    let (mut a, mut b, src, dst) = synced_pair(&l, 7);

    // A file created and replicated just before the kill, then deleted while A is down.
    write(&src.join("short-lived.txt"), "here for a moment\n");
    wait_mirror(&mut [&mut a, &mut b], &src, &dst, "the short-lived file");
    a.kill();
    std::fs::remove_file(src.join("short-lived.txt")).unwrap();
    write(&src.join("while-down.txt"), "created while A was down\n");
    a.restart(None);
    wait_mirror(
        &mut [&mut a, &mut b],
        &src,
        &dst,
        "the restart after a kill",
    );
    assert!(!exists(&dst.join("short-lived.txt")));
    let status = a.wait_status(DEADLINE, "A in sync", |s| all_in_sync(s, "send"));
    let t = target(&status, "alpha", TO_B).unwrap();
    assert_eq!(
        t["counters"]["bytes_hashed"].as_u64(),
        Some(std::fs::metadata(src.join("while-down.txt")).unwrap().len()),
        "only the new file is read: the saved stat cache still serves after a kill"
    );
    a.stop();
    b.stop();
}

/// More removals than a sender keeps tombstones for (4,096, or a quarter of the folder)
/// are forgotten once they are twice that; a receiver that was away for all of them is sent
/// a full index when it comes back, and removes them too. A restart of the sender keeps the
/// moved history: the receiver, now in sync, is sent nothing.
#[test]
fn removals_beyond_the_kept_tombstones_reach_a_receiver_that_was_away() {
    const CHURN: u64 = 9_000;
    let l = Layout::new();
    let (src, dst) = (l.folder("A", "alpha"), l.folder("B", "alpha"));
    mkdir(&src);
    mkdir(&dst);
    fill(&src, 11);
    for n in 0..CHURN {
        write_file(
            &src.join(format!("churn/{:02}/{n}.txt", n % 30)),
            "",
            0o644,
            time_n(n),
        );
    }
    let (mut a, mut b) = sender_and_receiver(&l);
    wait_mirror(&mut [&mut a, &mut b], &src, &dst, "the initial sync");

    b.stop();
    std::fs::remove_dir_all(src.join("churn")).unwrap();
    write(&src.join("while-away.txt"), "created while B was away\n");
    a.wait_log_count("oldest removals forgotten", 1, DEADLINE);
    b.restart(None);
    wait_mirror(
        &mut [&mut a, &mut b],
        &src,
        &dst,
        "B's return after the churn",
    );
    assert!(!exists(&dst.join("churn")));

    a.stop();
    a.restart(None);
    let status = a.wait_status(DEADLINE, "A in sync after its restart", |s| {
        all_in_sync(s, "send")?;
        let t = target(s, "alpha", TO_B)?;
        if t["counters"]["wire_bytes_in"].as_u64().unwrap_or(0) == 0 {
            return Err("B has not answered yet".into());
        }
        Ok(())
    });
    let t = target(&status, "alpha", TO_B).unwrap();
    for counter in QUIET_COUNTERS {
        assert_eq!(
            t["counters"][counter].as_u64(),
            Some(0),
            "{counter} after A's restart: {}",
            brief_status(&status)
        );
    }
    a.stop();
    b.stop();
}

/// A sender restarted cleanly resumes where its receiver says it is, and that statement
/// arrives as soon as the link is up, often before the scan found what changed while the
/// sender was down: the folder turns live only once that change is applied.
#[test]
fn a_restarted_sender_turns_live_only_once_the_change_made_while_down_is_applied() {
    let l = Layout::new();
    let (mut a, mut b, src, dst) = synced_pair(&l, 11);
    a.wait_log_count("initial sync complete", 1, DEADLINE);

    a.stop();
    write(&src.join("while-down.txt"), "created while A was down\n");
    a.restart(None);
    a.wait_log_count("initial sync complete", 2, DEADLINE);
    assert_eq!(
        std::fs::read_to_string(dst.join("while-down.txt"))
            .ok()
            .as_deref(),
        Some("created while A was down\n"),
        "A reported its initial sync complete before B had the change\n{}",
        a.describe()
    );
    a.stop();
    b.stop();
}

/// A receive folder's counters are summed over its sessions: a sender that reconnects opens
/// a new session (with new counters) on the receiver, and the receiver's status and
/// `/metrics` still count what the earlier session wrote, never dropping.
#[test]
fn a_receivers_counters_outlive_the_senders_reconnection() {
    let l = Layout::new();
    let (mut a, mut b, src, dst) = synced_pair(&l, 13);
    let entries = snapshot(&src).len() as u64;
    let counts = |s: &Value| -> Result<(u64, u64), String> {
        let c = &target(s, "alpha", "A")?["counters"];
        Ok((
            c["files_created"].as_u64().unwrap_or(0),
            c["bytes_written"].as_u64().unwrap_or(0),
        ))
    };
    let status = b.wait_status(DEADLINE, "B counts every entry A sent", |s| {
        all_in_sync(s, "receive")?;
        match counts(s)? {
            (created, _) if created == entries => Ok(()),
            (created, _) => Err(format!("{created} of {entries} entries created")),
        }
    });
    let (created, written) = counts(&status).unwrap();
    assert!(written > 0, "{}", brief_status(&status));

    a.stop();
    let late = "written while A was down\n";
    write(&src.join("while-down.txt"), late);
    a.restart(None);
    wait_mirror(&mut [&mut a, &mut b], &src, &dst, "A's restart");
    let want = (created + 1, written + late.len() as u64);
    b.wait_status(DEADLINE, "B's counters include both sessions", |s| {
        all_in_sync(s, "receive")?;
        let have = counts(s)?;
        if have == want {
            Ok(())
        } else {
            Err(format!("(created, bytes written) {have:?}, want {want:?}"))
        }
    });
    let metrics = b.get("/metrics");
    let line = format!(
        "ferry_files_total{{folder=\"alpha\",target=\"A\",action=\"created\"}} {}",
        want.0
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in /metrics:\n{metrics}"
    );
    a.stop();
    b.stop();
}
