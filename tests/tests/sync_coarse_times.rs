//! A target whose file system keeps file times in whole seconds (ext4 made with 128-byte
//! inodes, as FAT keeps two seconds and many network shares one): a second `ferry sync`
//! finds nothing to do, instead of taking every file for changed because its mtime lost
//! its nanoseconds, while real changes still go across.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::util::live::{wait_until_blocking, WatchProcess};
use crate::util::*;

/// A small ext4 image with 128-byte inodes (whole-second times), loop-mounted for one test
/// with `strictatime` (so a file read shows in its atime); lazily unmounted on drop.
struct CoarseFs {
    dir: PathBuf,
}

impl CoarseFs {
    /// Makes and mounts the image under `base`, or says loudly on stderr why it cannot
    /// (not root, no `mkfs.ext4`, no loop devices in this container) and returns `None`.
    fn mount(test: &str, base: &Path) -> Option<CoarseFs> {
        let image = base.join("coarse.img");
        let dir = base.join("mnt");
        mkdir(&dir);
        let run = |what: &str, cmd: &mut Command| -> bool {
            match cmd.output() {
                Ok(o) if o.status.success() => true,
                Ok(o) => {
                    eprintln!(
                        "SKIPPED {test}: {what} failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    false
                }
                Err(e) => {
                    eprintln!("SKIPPED {test}: cannot run {what}: {e}");
                    false
                }
            }
        };
        let made = std::fs::File::create(&image)
            .and_then(|f| f.set_len(64 << 20))
            .is_ok()
            && run(
                "mkfs.ext4",
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-I", "128"])
                    .arg(&image),
            )
            && run(
                "mount -o loop",
                Command::new("mount")
                    .args(["-o", "loop,strictatime"])
                    .arg(&image)
                    .arg(&dir),
            );
        made.then_some(CoarseFs { dir })
    }
}

impl Drop for CoarseFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mtime_of(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn a_target_keeping_whole_seconds_is_in_sync_after_one_run_and_still_gets_changes() {
    let base = tempdir();
    let Some(fs) = CoarseFs::mount(
        "a_target_keeping_whole_seconds_is_in_sync_after_one_run_and_still_gets_changes",
        base.path(),
    ) else {
        return;
    };
    let src = tempdir();
    let s = src.path();
    for i in 0..20u64 {
        // time_n has nanoseconds: the target keeps only the seconds.
        write_file(
            &s.join(format!("f{i}")),
            format!("file {i}\n"),
            0o644,
            time_n(i),
        );
    }
    write_file(&s.join("d/inner"), "inner\n", 0o600, time_n(30));
    set_mtime(&s.join("d"), time_n(31));
    let dst = fs.dir.join("dst");

    let first = sync_ok(s, &dst, &[]);
    assert_eq!(first.created, 22, "{}", first.raw);
    // The file system really cuts times, or this test shows nothing.
    let (src_t, dst_t) = (mtime_of(&s.join("f1")), mtime_of(&dst.join("f1")));
    assert_ne!(
        src_t, dst_t,
        "the mount keeps nanoseconds: the test cannot tell"
    );
    assert!(src_t.duration_since(dst_t).unwrap() < Duration::from_secs(1));

    let again = sync_ok(s, &dst, &[]);
    let done = [
        again.created,
        again.updated,
        again.metadata_only,
        again.removed,
    ];
    assert_eq!(done, [0; 4], "a second run changes nothing: {}", again.raw);
    assert_eq!(again.bytes_written, 0, "{}", again.raw);

    // Real changes still go across: an mtime a minute later, and new content.
    set_mtime(&s.join("f2"), time_n(2) + Duration::from_secs(60));
    write_file(&s.join("f3"), "file 3, rewritten\n", 0o644, time_n(40));
    let changed = sync_ok(s, &dst, &[]);
    assert_eq!(
        (changed.metadata_only, changed.updated),
        (1, 1),
        "{}",
        changed.raw
    );
    assert_eq!(
        std::fs::read(dst.join("f3")).unwrap(),
        b"file 3, rewritten\n"
    );
    let moved = mtime_of(&dst.join("f2"));
    let want = time_n(2) + Duration::from_secs(60);
    assert!(want.duration_since(moved).unwrap() < Duration::from_secs(1));
    for i in 0..20u64 {
        let name = format!("f{i}");
        assert_eq!(
            std::fs::read(dst.join(&name)).unwrap(),
            std::fs::read(s.join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// Rewrites `path` with `content` (the same size as before) and an mtime in the same second
/// as `like`, so that a target keeping whole seconds holds the old copy's time exactly.
fn rewrite_within_the_second(path: &Path, content: &str, like: SystemTime) {
    let since = like.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let same_second = SystemTime::UNIX_EPOCH
        + Duration::from_secs(since.as_secs())
        + Duration::from_nanos(999_000_000);
    assert_ne!(same_second, like);
    write_file(path, content, 0o644, same_second);
}

#[test]
fn a_same_size_edit_within_the_copys_second_is_seen_with_state() {
    let base = tempdir();
    let Some(fs) = CoarseFs::mount(
        "a_same_size_edit_within_the_copys_second_is_seen_with_state",
        base.path(),
    ) else {
        return;
    };
    let (src, state) = (tempdir(), tempdir());
    let s = src.path();
    write_file(&s.join("f"), "AAAA\n", 0o644, time_n(1));
    let dst = fs.dir.join("dst");
    let state_flag = format!("--state={}", state.path().display());
    sync_ok(s, &dst, &[&state_flag]);
    let again = sync_ok(s, &dst, &[&state_flag]);
    assert_eq!(
        again.bytes_written + again.metadata_only,
        0,
        "{}",
        again.raw
    );
    // A kept run with nothing changed reads neither side: the saved lists decide.
    let atime = |p: &Path| std::fs::metadata(p).unwrap().accessed().unwrap();
    let read_before = atime(&dst.join("f"));
    let idle = sync_ok(s, &dst, &[&state_flag]);
    assert_eq!(idle.raw["bytes_hashed"], 0, "{}", idle.raw);
    assert_eq!(
        atime(&dst.join("f")),
        read_before,
        "the target file was read"
    );

    rewrite_within_the_second(&s.join("f"), "BBBB\n", time_n(1));
    let edited = sync_ok(s, &dst, &[&state_flag]);
    assert_eq!(
        std::fs::read(dst.join("f")).unwrap(),
        b"BBBB\n",
        "{}",
        edited.raw
    );
}

#[test]
fn a_same_size_edit_within_the_copys_second_is_seen_live() {
    let base = tempdir();
    let Some(fs) = CoarseFs::mount(
        "a_same_size_edit_within_the_copys_second_is_seen_live",
        base.path(),
    ) else {
        return;
    };
    let src = tempdir();
    let s = src.path();
    write_file(&s.join("f"), "AAAA\n", 0o644, time_n(1));
    write_file(&s.join("g"), "GGGG\n", 0o644, time_n(2));
    let dst = fs.dir.join("dst");
    // In sync before the watch starts: its target index knows no content.
    sync_ok(s, &dst, &[]);
    let log = base.path().join("watch.log");
    let mut watch = WatchProcess::spawn(s, &dst, &[], &log);
    wait_until_blocking(Duration::from_secs(30), "the watch's initial sync", || {
        watch.assert_running();
        if watch.stderr().contains("initial sync complete") {
            Ok(())
        } else {
            Err(watch.stderr())
        }
    });
    rewrite_within_the_second(&s.join("f"), "BBBB\n", time_n(1));
    wait_until_blocking(
        Duration::from_secs(30),
        "the edit reaches DST",
        || match std::fs::read(dst.join("f")) {
            Ok(b) if b == b"BBBB\n" => Ok(()),
            other => Err(format!("DST holds {other:?}\n{}", watch.stderr())),
        },
    );
    watch.terminate();
    let (status, stderr) = watch.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("changed in the target"),
        "no false alarm: {stderr}"
    );
}
