//! Small readers for Linux `/proc`: a process's CPU time, memory and context switches,
//! the load average, the clock tick rate and the file system a path lives on.
//!
//! Used by the benchmarks to observe a child process (e.g. `ferry watch`) from outside,
//! without `unsafe` and without extra dependencies.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// CPU time a process has used so far, in clock ticks (see [`clock_ticks_per_second`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// User-mode time of all the process's threads (`utime`, field 14 of `/proc/PID/stat`).
    pub user: u64,
    /// Kernel-mode time of all the process's threads (`stime`, field 15).
    pub system: u64,
}

impl CpuTicks {
    /// `user + system`.
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// Ticks used since `earlier` (saturating per field).
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Parses the contents of a `/proc/PID/stat` file into its CPU ticks.
pub fn parse_stat(stat: &str) -> io::Result<CpuTicks> {
    stat_ticks(stat, 14, 15)
}

/// Fields `user` and `system` of a `/proc/PID/stat` text, as ticks.
fn stat_ticks(stat: &str, user: usize, system: usize) -> io::Result<CpuTicks> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': the
    // fields after the *last* ')' start with field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| bad("no ')' in /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        let s = fields
            .get(n - 3)
            .ok_or_else(|| bad(format!("/proc/PID/stat has no field {n}")))?;
        s.parse()
            .map_err(|e| bad(format!("/proc/PID/stat field {n} {s:?}: {e}")))
    };
    Ok(CpuTicks {
        user: field(user)?,
        system: field(system)?,
    })
}

/// CPU ticks used so far by process `pid` (all threads; children not included).
pub fn cpu_ticks(pid: u32) -> io::Result<CpuTicks> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// Parses the CPU ticks of the children a process has waited for (`cutime` and `cstime`,
/// fields 16 and 17 of `/proc/PID/stat`, which include their own waited-for children).
pub fn parse_stat_children(stat: &str) -> io::Result<CpuTicks> {
    stat_ticks(stat, 16, 17)
}

/// CPU ticks of the children process `pid` has waited for (see [`parse_stat_children`]).
pub fn children_cpu_ticks(pid: u32) -> io::Result<CpuTicks> {
    parse_stat_children(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// CPU ticks of process `pid` together with those of the children it waited for.
pub fn cpu_ticks_with_children(pid: u32) -> io::Result<CpuTicks> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (own, children) = (parse_stat(&stat)?, parse_stat_children(&stat)?);
    Ok(CpuTicks {
        user: own.user + children.user,
        system: own.system + children.system,
    })
}

/// The live children of process `pid` (from every thread's `/proc/PID/task/TID/children`).
pub fn child_pids(pid: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let list = match fs::read_to_string(task?.path().join("children")) {
            Ok(l) => l,
            // A thread that ended meanwhile has no children left.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for p in list.split_whitespace() {
            out.push(
                p.parse()
                    .map_err(|e| bad(format!("child pid {p:?}: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// Value in KiB of a `Key:   1234 kB` line of a `/proc/.../status` text (`None` if absent).
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// A `kB` field (e.g. `VmRSS`, `VmHWM`) of `/proc/PID/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, key).ok_or_else(|| bad(format!("no {key} in /proc/{pid}/status")))
}

/// Context switches of one thread so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSwitches {
    /// Voluntary switches (the thread blocked: sleeps, waits, I/O) — roughly, wake-ups.
    pub voluntary: u64,
    /// Involuntary switches (preempted).
    pub involuntary: u64,
}

/// Context switches of every thread of process `pid`, by thread id
/// (`/proc/PID/task/*/status`; a thread that exits while being read is left out).
pub fn thread_switches(pid: u32) -> io::Result<BTreeMap<u32, ThreadSwitches>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let count = |key: &str| {
            status.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().parse::<u64>().ok())?
            })
        };
        out.insert(
            tid,
            ThreadSwitches {
                voluntary: count("voluntary_ctxt_switches").unwrap_or(0),
                involuntary: count("nonvoluntary_ctxt_switches").unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// Context switches of a process between two [`thread_switches`] snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchDelta {
    /// Threads in the first snapshot.
    pub threads_before: usize,
    /// Threads in the second snapshot.
    pub threads_after: usize,
    /// Threads that appeared in between (their switches count in full).
    pub started: usize,
    /// Threads that exited in between (their switches in between are not known and not
    /// counted).
    pub exited: usize,
    /// Voluntary switches in between.
    pub voluntary: u64,
    /// Involuntary switches in between.
    pub involuntary: u64,
}

impl SwitchDelta {
    /// Switches from `before` to `after`.
    pub fn between(
        before: &BTreeMap<u32, ThreadSwitches>,
        after: &BTreeMap<u32, ThreadSwitches>,
    ) -> Self {
        let mut d = SwitchDelta {
            threads_before: before.len(),
            threads_after: after.len(),
            ..SwitchDelta::default()
        };
        for (tid, a) in after {
            let b = before.get(tid).copied().unwrap_or_else(|| {
                d.started += 1;
                ThreadSwitches::default()
            });
            d.voluntary += a.voluntary.saturating_sub(b.voluntary);
            d.involuntary += a.involuntary.saturating_sub(b.involuntary);
        }
        d.exited = before.keys().filter(|t| !after.contains_key(t)).count();
        d
    }

    /// All switches in between.
    pub fn total(self) -> u64 {
        self.voluntary + self.involuntary
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, the unit of [`CpuTicks`]).
pub fn clock_ticks_per_second() -> io::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    if !out.status.success() {
        return Err(bad(format!("getconf CLK_TCK failed: {}", out.status)));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(format!("getconf CLK_TCK printed {s:?}"))),
    }
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minute load averages).
pub fn load_average() -> io::Result<[f64; 3]> {
    let s = fs::read_to_string("/proc/loadavg")?;
    let mut it = s.split_whitespace().map(str::parse::<f64>);
    let mut next = || {
        it.next()
            .and_then(Result::ok)
            .ok_or_else(|| bad(format!("cannot parse /proc/loadavg {s:?}")))
    };
    Ok([next()?, next()?, next()?])
}

/// Number of online CPUs as the standard library sees them (1 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The mount a path lives on: mount point, file-system type and source device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount point.
    pub mount_point: PathBuf,
    /// File-system type (`ext4`, `tmpfs`, `overlay`, …).
    pub fs_type: String,
    /// Mount source (device), as the kernel reports it.
    pub source: String,
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits.iter().fold(0u8, |acc, d| (acc << 3) | (d - b'0'));
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds, in a `/proc/self/mountinfo` text, the mount with the longest mount point that
/// contains `path` (which should be canonical).
pub fn parse_mountinfo(mountinfo: &str, path: &Path) -> Option<MountInfo> {
    let mut best: Option<MountInfo> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mp));
        let mut r = right.split_whitespace();
        let Some(fs_type) = r.next().map(str::to_string) else {
            continue;
        };
        let source = unescape(r.next().unwrap_or(""));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| mount_point.components().count() >= b.mount_point.components().count());
        if longer {
            best = Some(MountInfo {
                mount_point,
                fs_type,
                source,
            });
        }
    }
    best
}

/// The mount `path` lives on (`None` if it cannot be determined).
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let path = path.canonicalize().ok()?;
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let s = "1234 (we ird) cmd)) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                 17 4 0 0 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(
            parse_stat(s).unwrap(),
            CpuTicks {
                user: 17,
                system: 4
            }
        );
        assert!(parse_stat("1 (x) S 1").is_err());
        assert!(parse_stat("no parens").is_err());
        let s = "1234 (we ird) cmd)) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                 17 4 9 2 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(
            parse_stat_children(s).unwrap(),
            CpuTicks { user: 9, system: 2 }
        );
        assert!(parse_stat_children("1 (x) S 1 1 1 0 -1 0 0 0 0 0 5 6").is_err());
    }

    #[test]
    fn a_waited_child_is_listed_until_it_is_reaped_and_its_time_then_counts_as_ours() {
        let me = std::process::id();
        let before = children_cpu_ticks(me).unwrap();
        // A child that burns about a tenth of a second of CPU (10 ticks at 100 Hz).
        let mut child = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        assert!(child_pids(me).unwrap().contains(&child.id()));
        assert!(child.wait().unwrap().success());
        assert!(!child_pids(me).unwrap().contains(&child.id()));
        let after = children_cpu_ticks(me).unwrap();
        assert!(
            after.total() > before.total(),
            "{before:?} -> {after:?}: the reaped child's CPU is not in ours"
        );
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let t = cpu_ticks(pid).unwrap();
        // Burn a little CPU so the numbers are non-decreasing and sane.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let t2 = cpu_ticks(pid).unwrap();
        assert!(t2.total() >= t.total());
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        let sw = thread_switches(pid).unwrap();
        assert!(sw.contains_key(&pid));
        let d = SwitchDelta::between(&sw, &thread_switches(pid).unwrap());
        assert!(d.threads_after >= 1);
        assert!(clock_ticks_per_second().unwrap() > 0);
        assert!(load_average().unwrap()[0] >= 0.0);
    }

    #[test]
    fn switch_deltas_follow_threads() {
        let t = |v, i| ThreadSwitches {
            voluntary: v,
            involuntary: i,
        };
        let before = BTreeMap::from([(1, t(10, 1)), (2, t(5, 0))]);
        let after = BTreeMap::from([(1, t(15, 2)), (3, t(4, 1))]);
        let d = SwitchDelta::between(&before, &after);
        assert_eq!(
            d,
            SwitchDelta {
                threads_before: 2,
                threads_after: 2,
                started: 1,
                exited: 1,
                voluntary: 9,
                involuntary: 2,
            }
        );
        assert_eq!(d.total(), 11);
    }

    #[test]
    fn parses_status_and_mountinfo() {
        let st = "Name:\tferry\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kib(st, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(st, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(st, "VmSwap"), None);
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  30 22 0:25 / /tmp rw shared:2 - tmpfs tmpfs rw\n\
                  31 22 0:26 / /mnt/with\\040space rw - xfs /dev/sdb rw\n";
        let m = parse_mountinfo(mi, Path::new("/tmp/x/y")).unwrap();
        assert_eq!((m.fs_type.as_str(), m.source.as_str()), ("tmpfs", "tmpfs"));
        let m = parse_mountinfo(mi, Path::new("/work/main")).unwrap();
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(m.mount_point, PathBuf::from("/"));
        let m = parse_mountinfo(mi, Path::new("/mnt/with space/a")).unwrap();
        assert_eq!(m.fs_type, "xfs");
        assert!(mount_of(Path::new("/")).is_some());
    }
}
