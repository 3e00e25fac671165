//! Remote links that drop and come back, all in one process: a server, a live source and a
//! TCP proxy the test can cut, in one actix system on 127.0.0.1. A transfer cut halfway is
//! finished from what already arrived, a reconnected link resends only what the target has
//! not acknowledged, a folder one node is sending to is refused to another as busy, a link
//! gone silent (no TCP error, only no bytes) is noticed by its keepalive and comes back, and
//! a one-shot sync to an address that accepts but never answers fails in bounded time.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use ferry_actors::supervisor::GetState;
use ferry_actors::{
    run_sync_to, FolderId, FolderJob, FolderState, FolderSupervisor, RestartPolicy, Stats,
    TargetSpec, WatchOptions,
};
use ferry_engine::target::TEMP_PREFIX;
use ferry_engine::ChunkParams;
use ferry_node::remote::client::{LinkOptions, RemoteSpec, Retry};
use ferry_node::remote::identity::Identity;
use ferry_node::remote::nodeid::NodeId;
use ferry_node::remote::server::{ServeConfig, ServedFolder, Server};
use ferry_node::remote::tls;
use ferry_node::remote::url::RemoteUrl;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::util::live::{get, mirror_diff, wait_for, wait_until};
use crate::util::*;

/// The size of the large file whose transfer is cut.
const BIG_LEN: u64 = 128 * MIB;

/// The proxy cuts the first connection once it has forwarded this much towards the server.
const CUT_AFTER: u64 = 64 * MIB;

/// How long the large mirror may take, reconnection included.
const BIG_DEADLINE: Duration = Duration::from_secs(120);

/// How long a mirror of small files may take.
const SMALL_DEADLINE: Duration = Duration::from_secs(60);

/// Short timings, so that a dropped link is noticed and re-established quickly.
const LINK: LinkOptions = LinkOptions {
    keepalive: Duration::from_secs(2),
    timeout: Duration::from_secs(10),
    connect_timeout: Duration::from_secs(10),
    backoff: Duration::from_millis(50),
    max_backoff: Duration::from_millis(500),
};

/// Shorter still, for the client of the silent-link tests: a silent peer is dropped after
/// a second, and a connection attempt that gets no answer fails after a second.
const FAST_LINK: LinkOptions = LinkOptions {
    keepalive: Duration::from_millis(200),
    timeout: Duration::from_secs(1),
    connect_timeout: Duration::from_secs(1),
    ..LINK
};

/// How long a silent link may take to be noticed, re-established and to carry a change.
const SILENT_DEADLINE: Duration = Duration::from_secs(30);

/// How long a one-shot sync to an address that never answers may take to fail.
const UNANSWERED_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A proxy that can cut its connections
// ---------------------------------------------------------------------------------------------

/// Counters of a [`Proxy`], shared with its connection tasks.
#[derive(Default)]
struct ProxyCounts {
    /// Bytes forwarded from clients to the server, over all connections.
    c2s: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Connections cut (by [`Proxy::cut_all`] or by the automatic cut).
    cut: AtomicU64,
    /// Connections that have stopped forwarding after [`Proxy::freeze_all`].
    frozen: AtomicU64,
}

/// What the test tells the open connections of a [`Proxy`].
#[derive(Clone, Copy, Debug)]
enum Command {
    /// Drop both sockets.
    Cut,
    /// Keep both sockets open but forward nothing more, either way.
    Freeze,
}

/// Forwards every connection it accepts to the server, counting what goes towards it; the
/// test can cut or freeze every open connection at once, and the first connection can be
/// cut on its own once it has carried a given number of bytes. Cutting drops both sockets,
/// as a network failure would, without any close message of the protocol or of TLS;
/// freezing keeps them open and silent, as a peer that hangs or a path that black-holes
/// packets would: no error ever shows on either side, only the silence.
struct Proxy {
    addr: SocketAddr,
    counts: Arc<ProxyCounts>,
    commands: broadcast::Sender<Command>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 in front of `server`; with `cut_first_after`, the first
    /// connection is cut once that many bytes went through it towards the server.
    async fn start(server: SocketAddr, cut_first_after: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the proxy cannot listen: {e}"));
        let addr = listener.local_addr().expect("the proxy's address");
        let counts = Arc::new(ProxyCounts::default());
        let (commands, _) = broadcast::channel(4);
        let (c, commands_tx) = (counts.clone(), commands.clone());
        actix::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    // Retrying at once would spin on this thread; the test's waits will
                    // time out and say what was not reached.
                    Err(e) => return eprintln!("the proxy stops accepting: {e}"),
                };
                let first = c.accepted.fetch_add(1, Ordering::Relaxed) == 0;
                let limit = cut_first_after.filter(|_| first);
                // Subscribed here, before the next accept: a command reaches exactly the
                // connections accepted before it was sent.
                actix::spawn(forward(
                    client,
                    server,
                    limit,
                    commands_tx.subscribe(),
                    c.clone(),
                ));
            }
        });
        Proxy {
            addr,
            counts,
            commands,
        }
    }

    /// Cuts every connection open now; later ones are not affected.
    fn cut_all(&self) {
        // No receiver means no connection open: nothing to cut.
        let _ = self.commands.send(Command::Cut);
    }

    /// Freezes every connection open now, and returns once all of them have stopped
    /// forwarding (bytes read from a socket before that may still be delivered; none read
    /// after). Later connections are forwarded normally. Returns how many were frozen.
    async fn freeze_all(&self) -> u64 {
        let before = get(&self.counts.frozen);
        // The number of receivers is the number of connections open now.
        let open = self.commands.send(Command::Freeze).unwrap_or(0) as u64;
        wait_until(
            SMALL_DEADLINE,
            &format!("the proxy's {open} open connection(s) are frozen"),
            || match get(&self.counts.frozen) - before {
                n if n >= open => Ok(()),
                n => Err(format!("{n} of {open} frozen")),
            },
        )
        .await;
        open
    }

    fn accepted(&self) -> u64 {
        get(&self.counts.accepted)
    }

    fn c2s(&self) -> u64 {
        get(&self.counts.c2s)
    }

    fn cuts(&self) -> u64 {
        get(&self.counts.cut)
    }
}

/// Carries one connection both ways until both sides have closed it, or until it is cut:
/// by a command, or once `limit` bytes went towards the server. A frozen connection stops
/// carrying anything but keeps both sockets open until it is cut or the test ends.
async fn forward(
    client: TcpStream,
    server: SocketAddr,
    limit: Option<u64>,
    mut commands: broadcast::Receiver<Command>,
    counts: Arc<ProxyCounts>,
) {
    let Ok(upstream) = TcpStream::connect(server).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = upstream.into_split();
    // True when the limit cut the connection; false when the client closed its side.
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carried = 0u64;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            carried += n as u64;
            counts.c2s.fetch_add(n as u64, Ordering::Relaxed);
            if limit.is_some_and(|l| carried >= l) {
                return true;
            }
        }
        let _ = sw.shutdown().await;
        false
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done, mut frozen) = (false, false, false);
    let was_cut = loop {
        tokio::select! {
            // Commands first, so that nothing more is carried once a freeze is seen.
            biased;
            command = commands.recv() => match command {
                Ok(Command::Freeze) => {
                    if !frozen {
                        frozen = true;
                        counts.frozen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A cut, or the proxy is gone.
                Ok(Command::Cut) | Err(_) => break true,
            },
            // Not polled once frozen: both sockets stay open, and nothing is read or
            // written any more.
            limited = &mut up, if !up_done && !frozen => {
                if limited {
                    break true;
                }
                up_done = true;
            }
            () = &mut down, if !down_done && !frozen => down_done = true,
        }
        if up_done && down_done {
            break false;
        }
    };
    if was_cut {
        counts.cut.fetch_add(1, Ordering::Relaxed);
    }
    // Returning drops both sockets.
}

// ---------------------------------------------------------------------------------------------
// A server, its peers and a source
// ---------------------------------------------------------------------------------------------

/// A server receiving folder `f` into DST, two client identities it accepts, and SRC. The
/// server runs on the current actix system; `client` reaches it through `proxy`.
struct Nodes {
    base: TempDir,
    src: PathBuf,
    dst: PathBuf,
    server_id: NodeId,
    server_addr: SocketAddr,
    /// The node the tests mirror from.
    client: Identity,
    /// Another node the server accepts.
    other: Identity,
    proxy: Proxy,
}

impl Nodes {
    /// Creates the identities and directories, fills SRC with `fill`, and starts the server
    /// and a proxy in front of it (`cut_first_after`: see [`Proxy::start`]).
    async fn start(fill: impl FnOnce(&Path), cut_first_after: Option<u64>) -> Nodes {
        let base = tempdir();
        let src = base.path().join("src");
        let dst = base.path().join("dst");
        mkdir(&src);
        mkdir(&dst);
        fill(&src);
        let identity = |name: &str| {
            let home = base.path().join(name);
            Identity::load_or_create(&home)
                .unwrap_or_else(|e| panic!("identity in {}: {e}", home.display()))
                .0
        };
        let (server, client, other) = (identity("server"), identity("client"), identity("other"));
        let server_id = server.id();
        let config = ServeConfig {
            identity: server,
            peers: BTreeSet::from([client.id(), other.id()]),
            folders: vec![ServedFolder {
                name: folder(),
                path: dst.clone(),
                peers: None,
            }],
            durable: false,
            link: LINK,
        };
        let server = Server::new(config, Arc::new(Stats::default()))
            .unwrap_or_else(|e| panic!("the server's TLS set-up: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the server cannot listen: {e}"));
        let server_addr = listener.local_addr().expect("the server's address");
        actix::spawn(server.run(listener));
        let proxy = Proxy::start(server_addr, cut_first_after).await;
        Nodes {
            base,
            src,
            dst,
            server_id,
            server_addr,
            client,
            other,
            proxy,
        }
    }

    /// A link for `identity` to folder `f` of the server at `addr`.
    fn spec(
        &self,
        identity: &Identity,
        addr: SocketAddr,
        retry: Retry,
        stats: &Arc<Stats>,
    ) -> RemoteSpec {
        let url = format!("ferry://{}@127.0.0.1:{}/f", self.server_id, addr.port());
        let url: RemoteUrl = url
            .parse()
            .unwrap_or_else(|e| panic!("{url} is not a remote URL: {e}"));
        RemoteSpec {
            url,
            tls: tls::client_config(identity, self.server_id)
                .unwrap_or_else(|e| panic!("the client's TLS set-up: {e}")),
            params: ChunkParams::default(),
            checksum: false,
            dry_run: false,
            ignore: Default::default(),
            link: LINK,
            retry,
            stats: stats.clone(),
            epoch: None,
        }
    }

    /// Starts mirroring SRC live to the server through the proxy, as `client`, never
    /// giving up on the link.
    fn mirror(&self, stats: &Arc<Stats>) -> Addr<FolderSupervisor> {
        self.mirror_with(LINK, stats)
    }

    /// [`Nodes::mirror`] with the client's link timed by `link` (the server keeps
    /// [`LINK`]).
    fn mirror_with(&self, link: LinkOptions, stats: &Arc<Stats>) -> Addr<FolderSupervisor> {
        let retry = Retry {
            first: true,
            max_failures: None,
        };
        let spec = RemoteSpec {
            link,
            ..self.spec(&self.client, self.proxy.addr, retry, stats)
        };
        let watch = WatchOptions {
            // A missed event should show as a failure, not be repaired by a rescan.
            rescan_every: None,
            ..WatchOptions::default()
        };
        FolderSupervisor::new(
            job(&self.src),
            watch,
            RestartPolicy::default(),
            stats.clone(),
            None,
        )
        .to_target(TargetSpec::Linked(spec.connector()))
        .start()
    }

    /// Waits until DST mirrors SRC, checking the trees only once `ready` (a cheap check)
    /// holds; fails at once if the supervisor gives up on the folder.
    async fn wait_mirror(
        &self,
        sup: &Addr<FolderSupervisor>,
        deadline: Duration,
        what: &str,
        ready: impl Fn(&Path) -> Result<(), String>,
    ) {
        let started = Instant::now();
        wait_for(deadline, &format!("DST mirrors SRC {what}"), || {
            let (src, dst, sup) = (self.src.clone(), self.dst.clone(), sup.clone());
            let ready = ready(&dst);
            async move {
                if let Ok(FolderState::Failed(why)) = sup.send(GetState).await {
                    panic!("the source side gave up on the folder: {why}");
                }
                ready?;
                tokio::task::spawn_blocking(move || mirror_diff(&src, &dst))
                    .await
                    .unwrap_or_else(|e| Err(format!("the mirror check panicked: {e}")))
            }
        })
        .await;
        eprintln!("DST mirrors SRC {what} after {:?}", started.elapsed());
    }
}

/// The folder every test sends to.
fn folder() -> FolderId {
    FolderId::new("f").expect("a valid folder id")
}

/// A job sending `source` (the target path is not used by a linked target).
fn job(source: &Path) -> FolderJob {
    FolderJob {
        folder: folder(),
        source: source.to_owned(),
        target: PathBuf::new(),
        checksum: false,
        dry_run: false,
        durable: false,
        params: ChunkParams::default(),
        ignore: Default::default(),
        remote: false,
    }
}

/// Always ready: the trees are compared at every check.
fn always(_: &Path) -> Result<(), String> {
    Ok(())
}

/// `len` bytes of distinct pseudo-random content (xorshift), different for each `seed`.
fn random_bytes(len: u64, seed: u64) -> Vec<u8> {
    let len = usize::try_from(len).expect("fits in memory");
    let mut out = vec![0u8; len.next_multiple_of(8)];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The names under `root` that are temp files of a transfer.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in rd {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                found.push(path);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn cut_transfer_is_finished_from_what_arrived() {
    let t0 = Instant::now();
    let nodes = Nodes::start(
        |src| {
            write(&src.join("big.bin"), random_bytes(BIG_LEN, 1));
            write(&src.join("a.txt"), "a small file\n");
            write(&src.join("sub/b.txt"), "another small file\n");
            write(&src.join("sub/c.bin"), pseudo_random(5000, 2));
        },
        Some(CUT_AFTER),
    )
    .await;
    eprintln!("set up in {:?}", t0.elapsed());
    let stats = Arc::new(Stats::default());
    let sup = nodes.mirror(&stats);

    // The trees are compared only once the large file is in place under its own name: it
    // is installed whole, so its size says the transfer is over.
    let big_in_place = |dst: &Path| match fs::metadata(dst.join("big.bin")) {
        Ok(m) if m.len() == BIG_LEN => Ok(()),
        Ok(m) => Err(format!("DST/big.bin has {} of {BIG_LEN} bytes", m.len())),
        Err(e) => Err(format!("DST/big.bin: {e}")),
    };
    nodes
        .wait_mirror(&sup, BIG_DEADLINE, "after the cut transfer", big_in_place)
        .await;

    let reconnects = get(&stats.reconnects);
    // The remote Applier's totals come back with its acknowledgements.
    let reused = get(&stats.bytes_reused);
    let sent = get(&stats.bytes_sent);
    eprintln!(
        "cuts {}, reconnects {reconnects}, proxied {} MiB, sent {} MiB, reused on the server {} MiB",
        nodes.proxy.cuts(),
        nodes.proxy.c2s() / MIB,
        sent / MIB,
        reused / MIB
    );
    assert_eq!(
        nodes.proxy.cuts(),
        1,
        "the proxy should have cut the first connection once"
    );
    assert!(
        reconnects >= 1,
        "the link should have reconnected after the cut"
    );
    assert!(
        reused >= 16 * MIB,
        "the server should copy the chunks that arrived before the cut from the temp file \
         left behind, not fetch them again: {reused} bytes reused"
    );
    // Finishing from what arrived sends the file once plus at most what was in flight at
    // the cut; starting over would send the 64 MiB before the cut and then all 128 again.
    assert!(
        sent < BIG_LEN + 48 * MIB,
        "{} MiB of chunk data sent for a {} MiB file cut after {} MiB: the transfer started over",
        sent / MIB,
        BIG_LEN / MIB,
        CUT_AFTER / MIB
    );
    let temps = temp_files(&nodes.dst);
    assert!(temps.is_empty(), "temp files left in DST: {temps:?}");
    eprintln!("test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn reconnect_resumes_after_the_last_applied_sequence() {
    let t0 = Instant::now();
    let nodes = Nodes::start(
        |src| {
            for d in 0..20u64 {
                for f in 0..100u64 {
                    let mut content = format!("file {f} of dir {d}\n").into_bytes();
                    content.extend(pseudo_random(100 + (f as usize * 7) % 300, d * 1000 + f));
                    write(&src.join(format!("d{d:02}/f{f:03}.bin")), content);
                }
            }
        },
        None,
    )
    .await;
    let stats = Arc::new(Stats::default());
    let sup = nodes.mirror(&stats);
    nodes
        .wait_mirror(&sup, SMALL_DEADLINE, "after the initial sync", always)
        .await;
    wait_until(
        SMALL_DEADLINE,
        "the target acknowledges the initial sync",
        || match get(&stats.applied_seq) {
            0 => Err("nothing acknowledged yet".into()),
            _ => Ok(()),
        },
    )
    .await;
    let m0 = get(&stats.bytes_metadata);
    let reconnects = get(&stats.reconnects);

    nodes.proxy.cut_all();
    write(&nodes.src.join("d07/f042.bin"), "changed after the cut\n");
    nodes
        .wait_mirror(&sup, SMALL_DEADLINE, "after the cut and a change", always)
        .await;

    let after = get(&stats.bytes_metadata) - m0;
    eprintln!(
        "metadata: {m0} bytes for the initial sync, {after} after the cut; reconnects {}",
        get(&stats.reconnects)
    );
    assert!(
        nodes.proxy.cuts() >= 1,
        "the proxy should have cut the link"
    );
    assert!(
        get(&stats.reconnects) > reconnects,
        "the link should have reconnected after the cut"
    );
    assert!(
        after < m0 / 10,
        "{after} bytes of metadata sent after the cut, against {m0} for all 2,000 entries: \
         the reconnected link should resend only what is newer than the last acknowledged \
         sequence"
    );
    eprintln!("test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn a_second_peer_cannot_take_a_busy_folder() {
    let t0 = Instant::now();
    let nodes = Nodes::start(
        |src| {
            write(&src.join("a.txt"), "from node A\n");
            write(&src.join("sub/b.txt"), "also from node A\n");
        },
        None,
    )
    .await;
    let stats = Arc::new(Stats::default());
    let sup = nodes.mirror(&stats);
    nodes
        .wait_mirror(&sup, SMALL_DEADLINE, "after the initial sync", always)
        .await;

    // Node B, straight to the server, while A's session is open.
    let other_src = nodes.base.path().join("other");
    write(&other_src.join("intruder.txt"), "from node B\n");
    let other_stats = Arc::new(Stats::default());
    let retry = Retry {
        first: false,
        max_failures: Some(1),
    };
    let spec = nodes.spec(&nodes.other, nodes.server_addr, retry, &other_stats);
    let refused = tokio::time::timeout(
        SMALL_DEADLINE,
        run_sync_to(
            job(&other_src),
            &TargetSpec::Linked(spec.connector()),
            other_stats,
        ),
    )
    .await
    .expect("node B's sync should end within the deadline");
    let err = match refused {
        Ok(report) => panic!(
            "node B's sync to a busy folder succeeded: {:?}",
            report.stats
        ),
        Err(e) => e.to_string(),
    };
    eprintln!("node B: {err}");
    assert!(
        err.contains("busy"),
        "node B should be refused as busy, got: {err}"
    );
    assert!(
        err.contains(&nodes.client.id().to_string()),
        "the refusal should name node A, which is sending: {err}"
    );

    // A's session was not disturbed and still carries changes.
    write(&nodes.src.join("sub/c.txt"), "after B was turned away\n");
    nodes
        .wait_mirror(&sup, SMALL_DEADLINE, "after B was refused", always)
        .await;
    assert_eq!(
        get(&stats.reconnects),
        0,
        "node A's link should not have been dropped for node B"
    );
    eprintln!("test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn a_silent_server_is_noticed_and_the_link_comes_back() {
    let t0 = Instant::now();
    let nodes = Nodes::start(
        |src| {
            write(&src.join("a.txt"), "before the freeze\n");
            write(&src.join("sub/b.txt"), "another small file\n");
            write(&src.join("sub/c.bin"), pseudo_random(5000, 3));
        },
        None,
    )
    .await;
    let stats = Arc::new(Stats::default());
    let sup = nodes.mirror_with(FAST_LINK, &stats);
    nodes
        .wait_mirror(&sup, SMALL_DEADLINE, "after the initial sync", always)
        .await;
    // Once acknowledged, the link is idle: only keepalives go over it.
    wait_until(
        SMALL_DEADLINE,
        "the target acknowledges the initial sync",
        || match get(&stats.applied_seq) {
            0 => Err("nothing acknowledged yet".into()),
            _ => Ok(()),
        },
    )
    .await;
    let reconnects = get(&stats.reconnects);
    assert_eq!(
        reconnects, 0,
        "the link should not have dropped before the freeze: the client pings every {:?} \
         and the server answers every ping",
        FAST_LINK.keepalive
    );
    let accepted = nodes.proxy.accepted();

    // From here on the connection carries nothing either way, and no error ever shows on
    // it: only the client's keepalive timeout can tell it is dead.
    let frozen = nodes.proxy.freeze_all().await;
    let frozen_at = Instant::now();
    assert_eq!(frozen, 1, "the proxy should have frozen the one open link");
    write(
        &nodes.src.join("a.txt"),
        "changed while the link is frozen\n",
    );
    nodes
        .wait_mirror(
            &sup,
            SILENT_DEADLINE,
            "after the link went silent and a change",
            always,
        )
        .await;

    eprintln!(
        "converged {:?} after the freeze; reconnects {}, proxy connections {} (were {accepted})",
        frozen_at.elapsed(),
        get(&stats.reconnects),
        nodes.proxy.accepted()
    );
    assert!(
        get(&stats.reconnects) >= 1,
        "the client should have noticed the silent link and reconnected"
    );
    assert!(
        nodes.proxy.accepted() > accepted,
        "the change should have come over a new connection"
    );
    eprintln!("test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn an_unresponsive_address_fails_a_one_shot_sync_in_bounded_time() {
    let t0 = Instant::now();
    let nodes = Nodes::start(|src| write(&src.join("a.txt"), "never sent\n"), None).await;

    // Accepts every connection and holds it, never reading or writing a byte: the TCP
    // connect succeeds, the TLS handshake never gets an answer.
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("the silent listener cannot listen: {e}"));
    let silent_addr = silent.local_addr().expect("the silent listener's address");
    let held = Arc::new(AtomicU64::new(0));
    let held_count = held.clone();
    actix::spawn(async move {
        let mut sockets = Vec::new();
        loop {
            match silent.accept().await {
                Ok((socket, _)) => {
                    sockets.push(socket);
                    held_count.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return eprintln!("the silent listener stops accepting: {e}"),
            }
        }
    });

    let stats = Arc::new(Stats::default());
    let retry = Retry {
        first: false,
        max_failures: Some(1),
    };
    let spec = RemoteSpec {
        link: FAST_LINK,
        ..nodes.spec(&nodes.client, silent_addr, retry, &stats)
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        UNANSWERED_DEADLINE,
        run_sync_to(
            job(&nodes.src),
            &TargetSpec::Linked(spec.connector()),
            stats,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "a one-shot sync to an address that never answers was still running after \
             {UNANSWERED_DEADLINE:?}, with a connect timeout of {:?}",
            FAST_LINK.connect_timeout
        )
    });
    let took = started.elapsed();
    let err = match outcome {
        Ok(report) => panic!(
            "a one-shot sync to an address that never answers succeeded: {:?}",
            report.stats
        ),
        Err(e) => e.to_string(),
    };
    eprintln!("failed after {took:?}: {err}");
    assert!(
        get(&held) >= 1,
        "the sync should have connected to the silent listener"
    );
    assert!(
        err.contains("no answer within"),
        "the sync should fail for want of an answer, got: {err}"
    );
    eprintln!("test took {:?}", t0.elapsed());
}
