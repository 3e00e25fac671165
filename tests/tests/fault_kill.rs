//! Crash consistency (issue 7): the receiving `ferry serve` and the sending `ferry watch` /
//! `ferry sync` SIGKILLed at random moments of a transfer of small and large files.
//!
//! After every kill, every file under its final name in the target must be a version the
//! source had at that path at some point (the harness is the only writer of SRC, and it writes
//! every version atomically, so it knows them all by blake3); and once the killed process is
//! started again and the client has caught up, the target must be an exact mirror with no
//! `.ferry-tmp-*` file left. Between kills the source is changed: small files rewritten,
//! deleted and added, one large file rewritten whole and a few bytes of another edited in
//! place, so that old and new versions coexist and every round has a large transfer to cut.
//!
//! The moment of each kill is a uniform random delay within the time an unkilled round of the
//! same changes took (measured first), so most kills land mid-transfer. The seed is printed
//! and in every failure message; `FERRY_KILL_SEED=N` replays a sequence of kill points and
//! changes (timing still varies). `crash_bench` (in `ferry-examples`) runs the same harness
//! with many more kill points.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_examples::crashcheck::{converged, temp_files, torn_files, version, Version};
use ferry_examples::workload::Rng;
use tempfile::TempDir;

use crate::util::remote::{dir_arg, node_id, ServeProcess};
use crate::util::*;

/// Small files in the tree (spread over [`DIRS`] directories), each up to [`SMALL_MAX`].
const SMALL_FILES: usize = 300;

/// Directories holding the small files.
const DIRS: usize = 12;

/// The largest small file.
const SMALL_MAX: u64 = 16 * KIB;

/// Sizes of the large files, in MiB.
const BIG_MIB: [u64; 3] = [8, 12, 16];

/// Kill points of the receiving server.
const RECEIVER_KILLS: usize = 4;

/// Kill points of the sending client (alternately a `ferry watch` and a `ferry sync`).
const SENDER_KILLS: usize = 3;

/// How long the initial sync, or catching up after a restart, may take.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// How often convergence is checked.
const POLL: Duration = Duration::from_millis(2);

/// The shortest window a kill moment is drawn from, should the calibration round be quicker.
const MIN_WINDOW: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// The source and every version it had
// ---------------------------------------------------------------------------------------------

/// SRC, written only through this type, and every version each of its paths has had.
///
/// A round's changes are prepared first (new versions staged outside SRC, their blake3
/// computed) and then applied in a few milliseconds (renames, removals and one small
/// `pwrite`), so that the transfer, not the preparation, is what the kill moment falls in.
struct Source {
    root: PathBuf,
    stage: PathBuf,
    staged: u64,
    /// Every version each path has had, deleted paths included.
    history: BTreeMap<PathBuf, BTreeSet<Version>>,
    /// The small files there are now (the large ones are always there).
    small: Vec<PathBuf>,
    /// Names handed out for new small files.
    added: u64,
}

/// One change to SRC, ready to apply.
enum Change {
    /// Rename the staged file over `rel` (creating its directory).
    Put {
        rel: PathBuf,
        staged: PathBuf,
        version: Version,
    },
    /// Remove `rel`.
    Remove { rel: PathBuf },
    /// Write `bytes` at `at` in `rel`, giving `version`.
    Edit {
        rel: PathBuf,
        at: u64,
        bytes: [u8; 8],
        version: Version,
    },
}

/// A round of changes, prepared.
struct Changes {
    list: Vec<Change>,
    what: String,
}

impl Source {
    fn new(root: PathBuf, stage: PathBuf) -> Source {
        mkdir(&root);
        mkdir(&stage);
        Source {
            root,
            stage,
            staged: 0,
            history: BTreeMap::new(),
            small: Vec::new(),
            added: 0,
        }
    }

    /// Stages `content` as the next version of `rel`.
    fn stage(&mut self, rel: PathBuf, content: &[u8]) -> Change {
        self.staged += 1;
        let staged = self.stage.join(format!("v{}", self.staged));
        fs::write(&staged, content).unwrap_or_else(|e| panic!("write {}: {e}", staged.display()));
        Change::Put {
            rel,
            staged,
            version: version(content),
        }
    }

    /// Applies `changes`, recording each new version before it can appear in SRC.
    fn apply(&mut self, changes: Changes) -> String {
        for change in changes.list {
            match change {
                Change::Put {
                    rel,
                    staged,
                    version,
                } => {
                    self.record(&rel, version);
                    let path = self.root.join(&rel);
                    if let Some(parent) = path.parent() {
                        mkdir(parent);
                    }
                    fs::rename(&staged, &path)
                        .unwrap_or_else(|e| panic!("rename into {}: {e}", path.display()));
                    if !self.small.contains(&rel) && !rel.starts_with("big") {
                        self.small.push(rel);
                    }
                }
                Change::Remove { rel } => {
                    let path = self.root.join(&rel);
                    fs::remove_file(&path)
                        .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
                    self.small.retain(|p| *p != rel);
                }
                Change::Edit {
                    rel,
                    at,
                    bytes,
                    version,
                } => {
                    self.record(&rel, version);
                    let path = self.root.join(&rel);
                    // Eight bytes at an aligned offset in one pwrite: a reader sees all or none.
                    File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.write_all_at(&bytes, at))
                        .unwrap_or_else(|e| panic!("pwrite {}: {e}", path.display()));
                }
            }
        }
        changes.what
    }

    fn record(&mut self, rel: &Path, v: Version) {
        self.history.entry(rel.to_owned()).or_default().insert(v);
    }

    /// A new small file's content: random bytes, empty now and then.
    fn small_content(rng: &mut Rng) -> Vec<u8> {
        let len = if rng.below(20) == 0 {
            0
        } else {
            rng.range(1, SMALL_MAX)
        };
        let mut buf = vec![0; len as usize];
        rng.fill_bytes(&mut buf);
        buf
    }

    fn big(i: usize) -> PathBuf {
        PathBuf::from(format!("big/b{i}.bin"))
    }

    fn big_content(i: usize, rng: &mut Rng) -> Vec<u8> {
        let mut buf = vec![0; (BIG_MIB[i] * MIB) as usize];
        rng.fill_bytes(&mut buf);
        buf
    }

    /// The initial tree: [`SMALL_FILES`] small files and the large ones.
    fn fill(&mut self, rng: &mut Rng) {
        let mut list = Vec::new();
        for i in 0..SMALL_FILES {
            let rel = PathBuf::from(format!("d{}/f{i}.dat", i % DIRS));
            list.push(self.stage(rel, &Self::small_content(rng)));
        }
        for i in 0..BIG_MIB.len() {
            list.push(self.stage(Self::big(i), &Self::big_content(i, rng)));
        }
        self.apply(Changes {
            list,
            what: "the initial tree".to_owned(),
        });
    }

    /// One round of changes: 20 small files rewritten, 5 deleted, 5 added, one large file
    /// rewritten whole and a few bytes of another edited in place.
    fn prepare(&mut self, rng: &mut Rng) -> Changes {
        let mut list = Vec::new();
        let mut small = self.small.clone();
        for _ in 0..20 {
            let rel = rng.choose(&small).clone();
            list.push(self.stage(rel, &Self::small_content(rng)));
        }
        for _ in 0..5 {
            let rel = small.swap_remove(rng.index(small.len()));
            list.push(Change::Remove { rel });
        }
        for _ in 0..5 {
            self.added += 1;
            let rel = PathBuf::from(format!("d{}/new{}.dat", rng.below(DIRS as u64), self.added));
            list.push(self.stage(rel, &Self::small_content(rng)));
        }
        let whole = rng.index(BIG_MIB.len());
        let edited = (whole + 1 + rng.index(BIG_MIB.len() - 1)) % BIG_MIB.len();
        list.push(self.stage(Self::big(whole), &Self::big_content(whole, rng)));
        let rel = Self::big(edited);
        let path = self.root.join(&rel);
        let mut now = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let at = rng.below(now.len() as u64 / 8) * 8;
        let bytes = rng.next_u64().to_le_bytes();
        now[at as usize..at as usize + 8].copy_from_slice(&bytes);
        list.push(Change::Edit {
            rel,
            at,
            bytes,
            version: version(&now),
        });
        Changes {
            list,
            what: format!(
                "20 small files rewritten, 5 deleted, 5 added, big/b{whole}.bin rewritten, \
                 8 bytes of big/b{edited}.bin edited in place"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on the target
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A `ferry watch` or `ferry sync` child, its stderr appended to a log. Killed on drop.
struct Client {
    child: Child,
    what: &'static str,
}

impl Client {
    fn spawn(what: &'static str, src: &Path, url: &str, home: &Path, log: &Path) -> Client {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let child = Command::new(ferry_bin())
            .arg(what)
            .arg(src)
            .arg(url)
            .arg("--home")
            .arg(home)
            .arg("--no-fsync")
            .env_remove("FERRY_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ferry {what}: {e}"));
        Client { child, what }
    }

    /// Stops the process with SIGTERM (a clean stop, not one of the kill points) and waits
    /// for it to exit.
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        crate::util::live::wait_until_blocking(
            CONVERGE_DEADLINE,
            &format!("ferry {} exits on SIGTERM", self.what),
            || match self.child.try_wait().expect("try_wait") {
                Some(_) => Ok(()),
                None => Err("still running".to_owned()),
            },
        );
    }

    /// SIGKILLs the process and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// What an unkilled round looked like: how long it took to converge, and from when to when
/// DST held temp files (files in transfer), counted from the moment SRC was changed.
#[derive(Debug)]
struct Timeline {
    total: Duration,
    temps: Option<(Duration, Duration)>,
}

impl Timeline {
    /// A kill moment: uniform over the whole round, or (every other draw, on average) over
    /// the part of it where files were in transfer.
    fn draw(&self, rng: &mut Rng) -> Duration {
        let (from, to) = match self.temps {
            Some(t) if rng.below(2) == 0 => t,
            _ => (Duration::ZERO, self.total.max(MIN_WINDOW)),
        };
        from + (to - from).mul_f64(rng.next_f64())
    }
}

/// Which process a round kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    /// The receiving `ferry serve`, while `ferry watch` sends.
    Server,
    /// The sending `ferry watch`.
    Watch,
    /// A sending `ferry sync` (the watch stopped meanwhile).
    Sync,
}

struct Harness {
    seed: u64,
    rng: Rng,
    source: Source,
    dst: PathBuf,
    client_home: PathBuf,
    client_log: PathBuf,
    server: ServeProcess,
    url: String,
    watch: Option<Client>,
    /// Every kill so far, for failure messages.
    journal: String,
    _base: TempDir,
}

impl Harness {
    fn start(seed: u64) -> Harness {
        let base = tempdir();
        let mut rng = Rng::new(seed);
        let mut source = Source::new(base.path().join("src"), base.path().join("stage"));
        source.fill(&mut rng);
        let dst = base.path().join("dst");
        let client_home = base.path().join("client-home");
        let client = node_id(&client_home);
        let server = ServeProcess::spawn(
            &base.path().join("server-home"),
            "127.0.0.1:0",
            &[
                "--folder".to_owned(),
                format!("f={}", dir_arg(&dst)),
                "--peer".to_owned(),
                client,
                "--no-fsync".to_owned(),
            ],
            &base.path().join("serve.log"),
        );
        let url = server.url("f");
        let client_log = base.path().join("client.log");
        let mut h = Harness {
            seed,
            rng,
            source,
            dst,
            client_home,
            client_log,
            server,
            url,
            watch: None,
            journal: String::new(),
            _base: base,
        };
        h.start_watch();
        h
    }

    fn start_watch(&mut self) {
        self.watch = Some(self.client("watch"));
    }

    fn client(&self, what: &'static str) -> Client {
        Client::spawn(
            what,
            &self.source.root,
            &self.url,
            &self.client_home,
            &self.client_log,
        )
    }

    /// The seed, the kills so far and both logs, for failure messages.
    fn context(&self) -> String {
        format!(
            "seed {} (replay with FERRY_KILL_SEED={})\n--- kills ---\n{}--- client log ---\n{}\n--- server log ---\n{}",
            self.seed,
            self.seed,
            self.journal,
            fs::read_to_string(&self.client_log).unwrap_or_default(),
            self.server.stderr()
        )
    }

    /// Waits until DST mirrors SRC with no temp file left, failing early if the server, the
    /// watch or `sync` (a one-shot client, which may exit 0) dies; returns when temp files
    /// were seen and how long it took.
    fn converge(&mut self, step: &str, mut sync: Option<&mut Client>) -> Timeline {
        let start = Instant::now();
        let mut temps: Option<(Duration, Duration)> = None;
        loop {
            self.server.assert_running();
            let exited = self.watch.as_mut().and_then(|w| {
                let status = w.child.try_wait().expect("try_wait")?;
                Some(format!("ferry {} exited ({status})", w.what))
            });
            let exited = exited.or_else(|| {
                let s = sync.as_mut()?;
                let status = s.child.try_wait().expect("try_wait")?;
                (!status.success()).then(|| format!("ferry sync failed ({status})"))
            });
            if let Some(exited) = exited {
                panic!("{exited} after {step}\n{}", self.context());
            }
            let at = start.elapsed();
            let why = if temp_files(&self.dst).is_empty() {
                match converged(&self.source.root, &self.dst) {
                    Ok(()) => return Timeline { total: at, temps },
                    Err(why) => why,
                }
            } else {
                temps = Some((temps.map_or(at, |t| t.0), at));
                "temp files in DST".to_owned()
            };
            assert!(
                at < CONVERGE_DEADLINE,
                "DST did not converge within {CONVERGE_DEADLINE:?} after {step}\nlast seen: {why}\n{}",
                self.context()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// An unkilled round with `victim`'s kind of client: how long it takes, and when it has
    /// files in transfer.
    fn calibrate(&mut self, victim: Victim) -> Timeline {
        if victim == Victim::Sync {
            if let Some(w) = self.watch.take() {
                w.stop();
            }
        }
        let changes = self.source.prepare(&mut self.rng);
        let changes = self.source.apply(changes);
        let mut sync = (victim == Victim::Sync).then(|| self.client("sync"));
        let t = self.converge(
            &format!("an unkilled round with {victim:?} ({changes})"),
            sync.as_mut(),
        );
        let _ = writeln!(
            self.journal,
            "calibration with {victim:?}: {:?}, temp files seen {:?}",
            t.total, t.temps
        );
        if victim == Victim::Sync {
            self.start_watch();
        }
        t
    }

    /// Check (a), right after a kill; returns the temp files DST held then.
    fn check_after_kill(&self, step: &str) -> usize {
        let temps = temp_files(&self.dst).len();
        let torn = torn_files(&self.dst, &self.source.history);
        assert!(
            torn.is_empty(),
            "after {step}, DST holds files that are no version of SRC:\n  {}\n{}",
            torn.join("\n  "),
            self.context()
        );
        temps
    }

    /// One round: change SRC, kill `victim` after a random delay within `window`, check,
    /// restart, converge, check.
    fn round(&mut self, n: usize, victim: Victim, timeline: &Timeline) {
        if victim == Victim::Sync {
            // A one-shot sync replaces the watch for this round.
            if let Some(w) = self.watch.take() {
                w.stop();
            }
        }
        let changes = self.source.prepare(&mut self.rng);
        let changes = self.source.apply(changes);
        let mut sync = (victim == Victim::Sync).then(|| self.client("sync"));
        let delay = timeline.draw(&mut self.rng);
        // The fault itself: a random moment, not a synchronisation.
        std::thread::sleep(delay);
        match victim {
            Victim::Server => self.server.kill(),
            Victim::Watch => self.watch.as_mut().expect("a watch runs").kill(),
            Victim::Sync => sync.as_mut().expect("a sync runs").kill(),
        }
        let step = format!("round {n}: {victim:?} killed {delay:?} after: {changes}");
        let temps = self.check_after_kill(&step);
        let _ = writeln!(self.journal, "{step}; {temps} temp file(s) at the kill");
        match victim {
            Victim::Server => self.server.restart(),
            Victim::Watch => self.start_watch(),
            Victim::Sync => {
                let args: [&OsStr; 6] = [
                    "sync".as_ref(),
                    self.source.root.as_os_str(),
                    self.url.as_ref(),
                    "--home".as_ref(),
                    self.client_home.as_os_str(),
                    "--no-fsync".as_ref(),
                ];
                let out = ferry(args);
                assert_eq!(
                    out.code,
                    0,
                    "the sync after {step} failed\n{out}\n{}",
                    self.context()
                );
            }
        }
        self.converge(&format!("restarting after {step}"), None);
        if victim == Victim::Sync {
            self.start_watch();
        }
    }
}

/// The seed: `FERRY_KILL_SEED`, else from the clock.
fn seed() -> u64 {
    match std::env::var("FERRY_KILL_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("FERRY_KILL_SEED={s:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    }
}

#[test]
fn kill_receiver_and_sender_at_random_moments_leaves_only_whole_versions_and_converges() {
    let seed = seed();
    eprintln!("fault_kill: seed {seed} (replay with FERRY_KILL_SEED={seed})");
    let mut h = Harness::start(seed);
    h.converge("the initial sync", None);
    // Calibration: an unkilled round of each kind of sender sets the windows the kill
    // moments are drawn from (a one-shot sync scans the whole tree first; a watch does not).
    let watched = h.calibrate(Victim::Watch);
    let synced = h.calibrate(Victim::Sync);

    let mut victims: Vec<Victim> = std::iter::repeat_n(Victim::Server, RECEIVER_KILLS)
        .chain((0..SENDER_KILLS).map(|i| {
            if i % 2 == 0 {
                Victim::Watch
            } else {
                Victim::Sync
            }
        }))
        .collect();
    // Fisher–Yates, so that kinds of kill follow one another in every order over many seeds.
    for i in (1..victims.len()).rev() {
        let j = h.rng.index(i + 1);
        victims.swap(i, j);
    }
    for (n, victim) in victims.into_iter().enumerate() {
        let timeline = if victim == Victim::Sync {
            &synced
        } else {
            &watched
        };
        h.round(n + 1, victim, timeline);
    }
    eprintln!("fault_kill: seed {seed}\n{}", h.journal);
}
