//! Broken and hostile peers against `ferry serve`: each test drives a raw client (TLS and
//! frames by hand, no `RemoteTarget`) to send one kind of bad input, then checks that the
//! server closed that connection instead of hanging, logged why, still serves a well-behaved
//! client, and touched nothing outside its target folder.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ciborium::value::Value;
use ferry_actors::messages::{
    ChunkBody, ChunkData, ChunkList, ChunkPayload, GroupData, GroupList, IndexDelta, InlineFile,
    InlinePiece, ListForm,
};
use ferry_actors::FolderId;
use ferry_engine::outline::{outline, Group, Outline};
use ferry_engine::{
    chunk_reader, ChunkId, ChunkParams, ContentId, EntryKind, EntryState, FileEntry, MtimeNs,
    RelPath, Seq, VersionVector,
};
use ferry_node::remote::codec::{read_frame, write_frame};
use ferry_node::remote::identity::Identity;
use ferry_node::remote::nodeid::NodeId;
use ferry_node::remote::protocol::{
    Frame, Hello, IndexPart, Open, Opened, Refusal, MAX_FRAME, MAX_GREETING, MAX_OPEN,
    PROTOCOL_VERSION,
};
use ferry_node::remote::tls;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::util::remote::{dir_arg, ServeProcess};
use crate::util::*;

/// How long any one step may take before the server is taken to hang.
const DEADLINE: Duration = Duration::from_secs(20);

/// The folder the client may send to.
const FOLDER: &str = "dst";

/// Stands for a path in a frame until the CBOR is rewritten to carry a bad one.
const PLACEHOLDER: &str = "placeholder-path";

type Tls = TlsStream<TcpStream>;

/// How far a raw client gets before it sends the bad input.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// TLS is up; nothing sent yet.
    Connected,
    /// Hello sent and answered.
    Greeted,
    /// The folder is open.
    Opened,
}

// ---------------------------------------------------------------------------------------------
// The server and what must survive it
// ---------------------------------------------------------------------------------------------

/// A `ferry serve` receiving into `dst`, a sibling `outside` holding one file, a small `src`
/// tree and a client identity the server knows; all in one temporary directory.
struct Fixture {
    tmp: TempDir,
    src: PathBuf,
    dst: PathBuf,
    outside: PathBuf,
    client_home: PathBuf,
    client: Identity,
    server: ServeProcess,
    outside_before: Snapshot,
    top_level: BTreeSet<OsString>,
}

impl Fixture {
    /// A server sharing only `dst`, with every folder of it open to the client.
    fn new() -> Fixture {
        Fixture::start(&[], None)
    }

    /// A server sharing `dst` and `other` (a sibling), the client allowed only `dst`.
    fn with_unshared_folder() -> Fixture {
        Fixture::start(&["other"], Some(FOLDER))
    }

    fn start(more_folders: &[&str], client_folders: Option<&str>) -> Fixture {
        let tmp = tempdir();
        let root = tmp.path();
        let dst = root.join(FOLDER);
        let outside = root.join("outside");
        write_file(
            &outside.join("sentinel.txt"),
            "outside the target: never touched\n",
            0o644,
            time_n(90),
        );
        let src = root.join("src");
        write_file(&src.join("hello.txt"), "hello\n", 0o644, time_n(1));
        write_file(
            &src.join("sub/data.bin"),
            pseudo_random(70_000, 3),
            0o600,
            time_n(2),
        );
        let client_home = root.join("client-home");
        let (client, _) = Identity::load_or_create(&client_home).expect("client identity");
        let mut args = vec!["--folder".to_owned(), format!("{FOLDER}={}", dir_arg(&dst))];
        for f in more_folders {
            args.push("--folder".to_owned());
            args.push(format!("{f}={}", dir_arg(&root.join(f))));
        }
        args.push("--peer".to_owned());
        args.push(match client_folders {
            Some(list) => format!("{}={list}", client.id()),
            None => client.id().to_string(),
        });
        let server = ServeProcess::spawn(
            &root.join("server-home"),
            "127.0.0.1:0",
            &args,
            &root.join("serve.log"),
        );
        let outside_before = snapshot(&outside);
        let top_level = list_dir(root);
        Fixture {
            tmp,
            src,
            dst,
            outside,
            client_home,
            client,
            server,
            outside_before,
            top_level,
        }
    }

    /// The server's id, as the client pins it.
    fn server_id(&self) -> NodeId {
        self.server
            .node
            .parse()
            .unwrap_or_else(|e| panic!("server id {:?}: {e}", self.server.node))
    }

    /// A TLS connection of the known client.
    async fn connect(&self) -> Tls {
        within(
            "a TLS handshake",
            connect(&self.server.addr, &self.client, self.server_id()),
        )
        .await
        .expect("the known client completes its TLS handshake")
    }

    /// A connection of the known client that has reached `stage`.
    async fn at(&self, stage: Stage) -> Tls {
        let mut s = self.connect().await;
        if matches!(stage, Stage::Connected) {
            return s;
        }
        send(&mut s, &Frame::Hello(Hello::ours())).await;
        match recv(&mut s).await {
            Frame::Hello(h) => assert_eq!(h.version, PROTOCOL_VERSION, "{h:?}"),
            other => panic!("the server answered Hello with {other:?}"),
        }
        if matches!(stage, Stage::Greeted) {
            return s;
        }
        send(&mut s, &open_frame(FOLDER)).await;
        match recv(&mut s).await {
            Frame::Opened(Opened { folder, .. }) => assert_eq!(folder.as_str(), FOLDER),
            other => panic!("the server answered Open with {other:?}"),
        }
        s
    }

    /// A connection with the folder `dst` open, through Hello and Open.
    async fn open(&self) -> Tls {
        self.at(Stage::Opened).await
    }

    /// Where the server's log ends now: [`Fixture::wait_log_since`] looks only after it.
    fn log_mark(&self) -> usize {
        self.server.stderr().len()
    }

    /// Waits until the server has logged `needle` after `mark`.
    #[track_caller]
    fn wait_log_since(&self, mark: usize, needle: &str) {
        crate::util::live::wait_until_blocking(
            DEADLINE,
            &format!("the server logs {needle:?}"),
            || {
                let log = self.server.stderr();
                if log.get(mark..).is_some_and(|new| new.contains(needle)) {
                    Ok(())
                } else {
                    Err(format!("--- server stderr ---\n{log}"))
                }
            },
        );
    }

    /// Panics unless `dst` comes to hold nothing at all. Waited for: the Applier of a
    /// session just refused may still be starting, and its start makes and removes a probe
    /// file in the target; anything still there at the deadline was left.
    #[track_caller]
    fn assert_dst_empty(&self) {
        crate::util::live::wait_until_blocking(DEADLINE, "the target holds nothing", || {
            // An entry gone between being listed and looked at is the probe on its way out.
            let left = try_snapshot(&self.dst)?;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "bad input left entries in the target: {:?}\n--- server stderr ---\n{}",
                    left.keys().collect::<Vec<_>>(),
                    self.server.stderr()
                ))
            }
        });
    }

    /// The end of every test: the server still runs and never panicked, a normal `ferry
    /// sync` through it mirrors `src`, and nothing beside `dst` changed.
    #[track_caller]
    fn assert_still_serves_and_nothing_escaped(mut self) {
        self.server.assert_running();
        let out = ferry([
            "sync".as_ref(),
            "--home".as_ref(),
            self.client_home.as_os_str(),
            self.src.as_os_str(),
            self.server.url(FOLDER).as_ref(),
        ]);
        assert_eq!(
            out.code,
            0,
            "a normal sync after the bad input failed\n{out}\n--- server stderr ---\n{}",
            self.server.stderr()
        );
        assert_mirror(&self.src, &self.dst);
        self.server.assert_running();
        assert_untouched(
            &self.outside_before,
            &snapshot(&self.outside),
            "the sibling directory outside the target",
        );
        assert_eq!(
            list_dir(self.tmp.path()),
            self.top_level,
            "entries appeared or vanished next to the target folder"
        );
        let log = self.server.stderr();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

/// The names in a directory.
fn list_dir(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").file_name())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A raw client
// ---------------------------------------------------------------------------------------------

/// Runs one test's client side on a fresh current-thread runtime.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Awaits `f`, panicking if it takes longer than [`DEADLINE`]: the server hangs.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}: the server hangs"))
}

/// TCP and TLS to `addr` as `identity`, accepting only the server `pin`.
async fn connect(addr: &str, identity: &Identity, pin: NodeId) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let config = tls::client_config(identity, pin).expect("a client TLS configuration");
    TlsConnector::from(config)
        .connect(tls::server_name(), tcp)
        .await
}

/// Writes `bytes` and flushes them.
async fn send_raw(s: &mut Tls, bytes: &[u8]) {
    within("write", async {
        s.write_all(bytes).await?;
        s.flush().await
    })
    .await
    .expect("write to the server");
}

/// Writes one frame and flushes it.
/// Sends chunk data for the test folder.
async fn send_chunks(s: &mut Tls, chunks: Vec<ChunkPayload>) {
    let data = ChunkData {
        folder: folder_id(FOLDER),
        chunks,
        failed: Vec::new(),
        files: Vec::new(),
    };
    send(s, &Frame::Chunks(data)).await;
}

/// Sends files whole for the test folder (as the reply to an inline content request).
async fn send_files(s: &mut Tls, files: Vec<InlineFile>) {
    let data = ChunkData {
        folder: folder_id(FOLDER),
        chunks: Vec::new(),
        failed: Vec::new(),
        files,
    };
    send(s, &Frame::Chunks(data)).await;
}

async fn send(s: &mut Tls, frame: &Frame) {
    within("write", async {
        write_frame(s, frame).await?;
        s.flush().await.map_err(Into::into)
    })
    .await
    .unwrap_or_else(|e: ferry_node::remote::codec::FrameError| panic!("send {frame:?}: {e}"));
}

/// The next frame from the server, skipping keepalive pings.
async fn recv(s: &mut Tls) -> Frame {
    loop {
        match within("frame from the server", read_frame(s, MAX_FRAME)).await {
            Ok(Some(Frame::Ping(_))) => {}
            Ok(Some(f)) => return f,
            Ok(None) => panic!("the server closed the connection"),
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
}

/// Everything the server sent until it closed the connection.
#[derive(Debug)]
struct Closed {
    /// The frames (pings left out).
    frames: Vec<Frame>,
    /// How the connection ended: `EOF` or the error reading it.
    end: String,
}

impl Closed {
    /// The refusal the server sent, if any.
    fn refusal(&self) -> Option<&Refusal> {
        self.frames.iter().find_map(|f| match f {
            Frame::Refused(r) => Some(r),
            _ => None,
        })
    }

    /// Panics unless the server sent a refusal whose reason mentions `needle`.
    #[track_caller]
    fn assert_refused(&self, needle: &str) {
        let r = self
            .refusal()
            .unwrap_or_else(|| panic!("no Refused frame before the close: {self:?}"));
        assert!(
            r.reason.contains(needle),
            "the refusal does not mention {needle:?}: {r:?}"
        );
    }
}

/// Reads until the server closes the connection; panics if it does not within [`DEADLINE`].
async fn until_closed(s: &mut Tls) -> Closed {
    let mut frames = Vec::new();
    let end = within("close of the connection", async {
        loop {
            match read_frame(s, MAX_FRAME).await {
                Ok(Some(Frame::Ping(_))) => {}
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return "EOF".to_owned(),
                Err(e) => return e.to_string(),
            }
        }
    })
    .await;
    Closed { frames, end }
}

/// The client's `Open` for `folder`, with the default chunker.
fn open_frame(folder: &str) -> Frame {
    Frame::Open(Open {
        folder: folder_id(folder),
        epoch: 7,
        params: ChunkParams::default(),
        checksum: false,
        dry_run: false,
        ignore: Vec::new(),
    })
}

fn folder_id(name: &str) -> FolderId {
    FolderId::new(name).expect("a valid folder id")
}

fn rel(path: &str) -> RelPath {
    RelPath::new(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// A present entry of `kind` with nothing else filled in.
fn entry(path: &str, kind: EntryKind, seq: u64) -> FileEntry {
    FileEntry {
        path: rel(path),
        kind,
        state: EntryState::Present,
        size: 0,
        mtime: MtimeNs(1_600_000_000_000_000_000),
        mode: 0o755,
        content: None,
        symlink_target: None,
        seq: Seq(seq),
        version: VersionVector::default(),
    }
}

/// A file entry holding `bytes`, its chunk list cut with the default chunker.
fn file_entry(path: &str, bytes: &[u8], seq: u64) -> FileEntry {
    let content = chunk_reader(bytes, &ChunkParams::default()).expect("chunk in memory");
    FileEntry {
        size: bytes.len() as u64,
        mode: 0o644,
        content: Some(content),
        ..entry(path, EntryKind::File, seq)
    }
}

/// A symlink entry pointing at `target`.
fn symlink_entry(path: &str, target: &Path, seq: u64) -> FileEntry {
    FileEntry {
        mode: 0o777,
        symlink_target: Some(target.to_str().expect("UTF-8 temp path").to_owned()),
        ..entry(path, EntryKind::Symlink, seq)
    }
}

/// An index update of `dst` in one part.
fn index_frame(snapshot: bool, entries: Vec<FileEntry>) -> Frame {
    let upto = Seq(entries.iter().map(|e| e.seq.0).max().unwrap_or(0));
    Frame::Index(IndexPart {
        delta: IndexDelta {
            folder: folder_id(FOLDER),
            snapshot,
            content_reply: false,
            entries,
            lists: Vec::new(),
            upto,
        },
        more: false,
    })
}

/// The wire bytes of `frame` with every text value `from` replaced by `to`: frames with
/// values the typed constructors refuse to build.
fn with_text_replaced(frame: &Frame, from: &str, to: &str) -> Vec<u8> {
    fn walk(v: &mut Value, from: &str, to: &str) -> usize {
        match v {
            Value::Text(t) if t == from => {
                *t = to.to_owned();
                1
            }
            Value::Array(items) => items.iter_mut().map(|i| walk(i, from, to)).sum(),
            Value::Map(pairs) => pairs
                .iter_mut()
                .map(|(k, v)| walk(k, from, to) + walk(v, from, to))
                .sum(),
            Value::Tag(_, inner) => walk(inner, from, to),
            _ => 0,
        }
    }
    let mut value = Value::serialized(frame).expect("a frame becomes a CBOR value");
    let replaced = walk(&mut value, from, to);
    assert!(replaced > 0, "{from:?} does not occur in {frame:?}");
    let mut body = Vec::new();
    ciborium::into_writer(&value, &mut body).expect("encode a CBOR value");
    let mut wire = u32::try_from(body.len())
        .expect("a small frame")
        .to_be_bytes()
        .to_vec();
    wire.extend_from_slice(&body);
    wire
}

/// A length prefix announcing `len` bytes.
fn prefix(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

/// Serves the chunks the server asks for from `files` (path, bytes) until it reports
/// `seq` applied; `Some` with what came when it closes the connection instead.
async fn answer_until_applied(s: &mut Tls, files: &[(&str, &[u8])], seq: u64) -> Option<Closed> {
    let mut frames = Vec::new();
    loop {
        let frame = match within("frame from the server", read_frame(s, MAX_FRAME)).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Some(Closed {
                    frames,
                    end: "EOF".to_owned(),
                })
            }
            Err(e) => {
                return Some(Closed {
                    frames,
                    end: e.to_string(),
                })
            }
        };
        match frame {
            Frame::NeedChunks(need) => {
                let chunks = need
                    .chunks
                    .iter()
                    .map(|c| {
                        let (_, bytes) = files
                            .iter()
                            .find(|(p, _)| *p == c.path.as_str())
                            .unwrap_or_else(|| panic!("a chunk of an unknown file: {c:?}"));
                        let at = usize::try_from(c.offset).expect("a small offset");
                        ChunkPayload {
                            id: c.id,
                            body: ChunkBody::Bytes(bytes[at..at + c.len as usize].to_vec()),
                        }
                    })
                    .collect();
                let data = ChunkData {
                    folder: folder_id(FOLDER),
                    chunks,
                    failed: Vec::new(),
                    files: Vec::new(),
                };
                send(s, &Frame::Chunks(data)).await;
            }
            Frame::Applied(a) if a.seq == Seq(seq) => return None,
            Frame::Refused(_) | Frame::ApplyFailed(_) => frames.push(frame),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The TLS layer
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_client_certificate_is_refused_in_the_handshake() {
    let fix = Fixture::new();
    let intruder_home = tempdir();
    let (intruder, _) = Identity::load_or_create(intruder_home.path()).expect("identity");
    let mark = fix.log_mark();

    let closed = block_on(async {
        // In TLS 1.3 the client may finish its half before the server judges its
        // certificate; it then learns of the refusal on its first read.
        let attempt = within(
            "a TLS handshake",
            connect(&fix.server.addr, &intruder, fix.server_id()),
        )
        .await;
        match attempt {
            Err(e) => format!("handshake failed: {e}"),
            Ok(mut s) => {
                // The write may already fail; what matters is that nothing comes back.
                let _ = write_frame(&mut s, &Frame::Hello(Hello::ours())).await;
                let _ = s.flush().await;
                let closed = until_closed(&mut s).await;
                assert!(
                    closed.frames.is_empty(),
                    "an unknown peer received frames: {closed:?}"
                );
                closed.end
            }
        }
    });
    eprintln!("unknown client: {closed}");

    fix.wait_log_since(mark, &format!("unknown peer {}", intruder.id()));
    fix.wait_log_since(mark, "TLS handshake failed");
    assert!(
        !fix.server.stderr()[mark..].contains("peer connected"),
        "the server let an unknown peer in:\n{}",
        fix.server.stderr()
    );
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn client_pinning_another_node_fails_its_handshake() {
    let fix = Fixture::new();
    let other_home = tempdir();
    let (other, _) = Identity::load_or_create(other_home.path()).expect("identity");
    let mark = fix.log_mark();

    let err = block_on(async {
        within(
            "a TLS handshake",
            connect(&fix.server.addr, &fix.client, other.id()),
        )
        .await
        .map(|_| ())
        .expect_err("a client pinning another node must not complete the handshake")
    });
    let err = err.to_string();
    assert!(
        err.contains(&format!("server is node {}", fix.server.node))
            && err.contains(&other.id().to_string()),
        "the client's error should name both ids: {err}"
    );

    fix.wait_log_since(mark, "TLS handshake failed");
    assert!(
        !fix.server.stderr()[mark..].contains("peer connected"),
        "{}",
        fix.server.stderr()
    );
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn plain_tcp_without_tls_is_refused() {
    let fix = Fixture::new();
    let mark = fix.log_mark();

    let (answer, end) = block_on(async {
        let mut tcp = within("a TCP connection", TcpStream::connect(&fix.server.addr))
            .await
            .expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: ferry\r\n\r\n")
            .await
            .expect("write the request");
        // The write side stays open: the server must give up on what it read, not on EOF.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let end = within("close of the connection", async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) => return "EOF".to_owned(),
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) => return e.to_string(),
                }
            }
        })
        .await;
        (answer, end)
    });
    eprintln!("plain TCP: {} bytes back, then {end}", answer.len());
    assert!(
        !answer.starts_with(b"HTTP"),
        "the server answered HTTP: {answer:?}"
    );

    fix.wait_log_since(mark, "TLS handshake failed");
    fix.assert_still_serves_and_nothing_escaped();
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

#[test]
fn garbage_after_the_handshake_is_a_protocol_error() {
    let fix = Fixture::new();
    let garbage = pseudo_random(4096, 0xbad);
    let announced = u32::from_be_bytes(garbage[..4].try_into().expect("4 bytes"));

    // Raw garbage: its first four bytes are read as a length prefix.
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.connect().await;
        send_raw(&mut s, &garbage).await;
        until_closed(&mut s).await
    });
    eprintln!("raw garbage (announcing {announced} bytes): {closed:?}");
    fix.wait_log_since(mark, "protocol error");
    if announced as usize > MAX_FRAME {
        fix.wait_log_since(mark, &format!("frame of {announced} bytes is over the"));
    }

    // Garbage behind a matching length prefix reaches the CBOR decoder, before and after
    // the folder is open.
    let mut framed = prefix(4092).to_vec();
    framed.extend_from_slice(&garbage[4..]);
    for stage in [Stage::Connected, Stage::Opened] {
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.at(stage).await;
            send_raw(&mut s, &framed).await;
            until_closed(&mut s).await
        });
        eprintln!("framed garbage ({stage:?}): {closed:?}");
        closed.assert_refused("not valid CBOR");
        fix.wait_log_since(mark, "protocol error: frame is not valid CBOR");
    }

    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn a_frame_over_the_size_limit_is_refused_before_its_body() {
    let fix = Fixture::new();
    let over = u32::try_from(MAX_FRAME + 1).expect("the limit fits in a prefix");
    let over_open = u32::try_from(MAX_OPEN + 1).expect("the limit fits in a prefix");
    for (stage, len, limit) in [
        (Stage::Connected, u32::MAX, MAX_GREETING),
        (Stage::Greeted, over_open, MAX_OPEN),
        (Stage::Opened, over, MAX_FRAME),
    ] {
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.at(stage).await;
            // Only the prefix: the server must refuse on it without waiting for a body.
            send_raw(&mut s, &prefix(len)).await;
            until_closed(&mut s).await
        });
        eprintln!("announcing {len} bytes ({stage:?}): {closed:?}");
        let needle = format!("frame of {len} bytes is over the {limit}-byte limit");
        closed.assert_refused(&needle);
        fix.wait_log_since(mark, &format!("protocol error: {needle}"));
    }
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn a_truncated_frame_is_a_protocol_error() {
    let fix = Fixture::new();
    for stage in [Stage::Connected, Stage::Opened] {
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.at(stage).await;
            let mut bytes = prefix(1000).to_vec();
            bytes.extend_from_slice(&[0x80; 10]);
            send_raw(&mut s, &bytes).await;
            // close_notify and FIN: the frame ends after 10 of its 1000 bytes.
            within("shutdown", s.shutdown()).await.expect("shutdown");
            until_closed(&mut s).await
        });
        eprintln!("truncated frame ({stage:?}): {closed:?}");
        fix.wait_log_since(
            mark,
            "protocol error: connection closed in the middle of a frame: expected 1000 bytes, got 10",
        );
    }
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

// ---------------------------------------------------------------------------------------------
// Well-formed frames out of place
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_message_types_and_versions_are_refused() {
    let fix = Fixture::new();
    let chunks = Frame::Chunks(ChunkData {
        folder: folder_id(FOLDER),
        chunks: vec![ChunkPayload {
            id: ChunkId::of(b"x"),
            body: ChunkBody::Bytes(b"x".to_vec()),
        }],
        failed: Vec::new(),
        files: Vec::new(),
    });
    let opened = Frame::Opened(Opened {
        folder: folder_id(FOLDER),
        applied: Seq(0),
    });
    let future_hello = Frame::Hello(Hello {
        version: 999,
        software: "ferry 99.0.0".to_owned(),
    });
    let other_folder = Frame::Index(IndexPart {
        delta: IndexDelta {
            folder: folder_id("elsewhere"),
            snapshot: true,
            content_reply: false,
            entries: Vec::new(),
            lists: Vec::new(),
            upto: Seq(1),
        },
        more: false,
    });

    // (what, how far the client gets first, the bad frame, what the refusal and log say)
    let cases: Vec<(&str, Stage, Frame, &str)> = vec![
        (
            "Opened first",
            Stage::Connected,
            opened.clone(),
            "expected Hello, got Opened",
        ),
        (
            "Chunks first",
            Stage::Connected,
            chunks.clone(),
            "expected Hello, got Chunks",
        ),
        (
            "Hello of version 999",
            Stage::Connected,
            future_hello,
            "protocol version 999 (ferry 99.0.0) is not supported",
        ),
        (
            "Hello instead of Open",
            Stage::Greeted,
            Frame::Hello(Hello::ours()),
            "expected Open, got Hello",
        ),
        (
            "Chunks instead of Open",
            Stage::Greeted,
            chunks,
            "expected Open, got Chunks",
        ),
        (
            "Opened after opening",
            Stage::Opened,
            opened,
            "unexpected Opened after the folder was opened",
        ),
        (
            "an index of another folder",
            Stage::Opened,
            other_folder,
            "a message for another folder than dst",
        ),
    ];
    for (what, stage, frame, needle) in cases {
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.at(stage).await;
            send(&mut s, &frame).await;
            until_closed(&mut s).await
        });
        eprintln!("{what}: {closed:?}");
        closed.assert_refused(needle);
        fix.wait_log_since(mark, needle);
    }
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

// ---------------------------------------------------------------------------------------------
// Entries that would leave the folder
// ---------------------------------------------------------------------------------------------

#[test]
fn entry_paths_that_leave_the_folder_are_refused() {
    let fix = Fixture::new();
    let outside_evil = fix.outside.join("evil");
    let outside_evil = outside_evil.to_str().expect("UTF-8 temp path");
    let bad_paths = [
        "../escape",
        "../outside/evil",
        "a/../../outside/evil",
        outside_evil,
        "a/\0b",
        "a//b",
        "a/./b",
        "a/",
        ".",
        "..",
        "",
    ];
    for bad in bad_paths {
        let frame = index_frame(true, vec![file_entry(PLACEHOLDER, b"pwned\n", 1)]);
        let wire = with_text_replaced(&frame, PLACEHOLDER, bad);
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.open().await;
            send_raw(&mut s, &wire).await;
            until_closed(&mut s).await
        });
        eprintln!("path {bad:?}: {closed:?}");
        assert!(
            !closed
                .frames
                .iter()
                .any(|f| matches!(f, Frame::NeedChunks(_) | Frame::Applied(_))),
            "the server took the entry {bad:?}: {closed:?}"
        );
        let needle = format!("invalid relative path {bad:?}");
        closed.assert_refused(&needle);
        fix.wait_log_since(
            mark,
            &format!("protocol error: frame is not valid CBOR for a Ferry message: {needle}"),
        );
        fix.assert_dst_empty();
    }
    assert!(!Path::new(outside_evil).exists());
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn a_file_inside_a_symlink_entry_is_refused() {
    let fix = Fixture::new();
    let link = || symlink_entry("link", &fix.outside, 1);
    let pwned = |seq| file_entry("link/pwned", b"written through a symlink\n", seq);
    let needle = "link/pwned lies inside link, which is not a directory";

    // In one snapshot.
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.open().await;
        send(&mut s, &index_frame(true, vec![link(), pwned(2)])).await;
        until_closed(&mut s).await
    });
    eprintln!("in one snapshot: {closed:?}");
    fix.wait_log_since(mark, &format!("protocol error: {needle}"));
    closed.assert_refused(needle);
    assert!(!exists(&fix.outside.join("pwned")));

    // The symlink applied first, the file in a later delta.
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.open().await;
        send(&mut s, &index_frame(true, vec![link()])).await;
        loop {
            match recv(&mut s).await {
                Frame::Applied(a) if a.seq == Seq(1) => break,
                Frame::Applied(_) => {}
                other => panic!("the server answered a lone symlink with {other:?}"),
            }
        }
        send(&mut s, &index_frame(false, vec![pwned(2)])).await;
        until_closed(&mut s).await
    });
    eprintln!("in a later delta: {closed:?}");
    fix.wait_log_since(mark, &format!("protocol error: {needle}"));
    closed.assert_refused(needle);
    assert!(!exists(&fix.outside.join("pwned")));

    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn a_file_left_inside_a_directory_turned_symlink_is_never_written_through_it() {
    let fix = Fixture::new();
    let x = pseudo_random(20_000, 5);
    let y = b"an unrelated file\n";
    let files = [("d/x", &x[..]), ("y", &y[..])];
    let mark = fix.log_mark();

    let closed = block_on(async {
        let mut s = fix.open().await;
        send(
            &mut s,
            &index_frame(
                true,
                vec![entry("d", EntryKind::Dir, 1), file_entry("d/x", &x, 1)],
            ),
        )
        .await;
        assert!(answer_until_applied(&mut s, &files, 1).await.is_none());
        assert!(exists(&fix.dst.join("d/x")));
        // `d` becomes a symlink to the sibling directory, but no tombstone comes for
        // `d/x`: the index now places a file inside a symlink. A later, unrelated change
        // makes the target plan again, and the client serves `d/x`'s true bytes.
        send(
            &mut s,
            &index_frame(false, vec![symlink_entry("d", &fix.outside, 2)]),
        )
        .await;
        if let Some(closed) = answer_until_applied(&mut s, &files, 2).await {
            return closed;
        }
        send(&mut s, &index_frame(false, vec![file_entry("y", y, 3)])).await;
        if let Some(closed) = answer_until_applied(&mut s, &files, 3).await {
            return closed;
        }
        // Touching the file itself makes the index place it inside the symlink again.
        let mut touched = file_entry("d/x", &x, 4);
        touched.mode = 0o600;
        send(&mut s, &index_frame(false, vec![touched])).await;
        until_closed(&mut s).await
    });
    eprintln!("{closed:?}");

    assert!(
        !exists(&fix.outside.join("x")),
        "d/x was written through the symlink into the sibling directory"
    );
    crate::util::live::wait_until_blocking(
        DEADLINE,
        "the server logs that d/x cannot go inside d",
        || {
            let log = fix.server.stderr();
            let new = &log[mark..];
            if new.contains("d/x lies inside d, which is not a directory")
                || new.contains("a parent component (d) is not a directory")
            {
                Ok(())
            } else {
                Err(format!("--- server stderr ---\n{log}"))
            }
        },
    );
    fix.assert_still_serves_and_nothing_escaped();
}

// ---------------------------------------------------------------------------------------------
// Chunk data
// ---------------------------------------------------------------------------------------------

#[test]
fn chunk_data_that_does_not_match_its_id_is_refused() {
    let fix = Fixture::new();
    // Longer than the largest chunk, so it is cut into several (a shorter file is one).
    let data = pseudo_random(300 * KIB as usize, 10);
    let entry = file_entry("f", &data, 1);
    assert!(
        entry.content.as_ref().expect("content").chunks.len() > 1,
        "300 KiB should make several chunks"
    );
    let mark = fix.log_mark();

    let (asked, closed) = block_on(async {
        let mut s = fix.open().await;
        send(&mut s, &index_frame(true, vec![entry])).await;
        let need = match recv(&mut s).await {
            Frame::NeedChunks(n) => n,
            other => panic!("the chunk list was sent, so NeedChunks was due, got {other:?}"),
        };
        assert!(!need.chunks.is_empty());
        // The right lengths, the wrong bytes.
        let chunks = need
            .chunks
            .iter()
            .map(|c| ChunkPayload {
                id: c.id,
                body: ChunkBody::Bytes(pseudo_random(c.len as usize, 99)),
            })
            .collect();
        send_chunks(&mut s, chunks).await;
        (need.chunks.len(), until_closed(&mut s).await)
    });
    eprintln!("{asked} chunk(s) asked for, then: {closed:?}");

    fix.wait_log_since(mark, "does not match its id");
    closed.assert_refused("does not match its id");
    assert!(
        !exists(&fix.dst.join("f")),
        "a file of unverified chunks appeared in the target"
    );
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn files_sent_whole_unasked_are_refused() {
    let fix = Fixture::new();
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.open().await;
        // Nothing was asked for inline: a sender must not push files on the receiver.
        let files = (0..64u32)
            .map(|i| {
                let data = pseudo_random(1_000, u64::from(i));
                let mut entry = file_entry(&format!("f{i}"), &data, u64::from(i) + 1);
                entry.content = None;
                InlineFile {
                    entry,
                    pieces: vec![InlinePiece::New(ChunkBody::Bytes(data))],
                }
            })
            .collect();
        send_files(&mut s, files).await;
        until_closed(&mut s).await
    });
    fix.wait_log_since(mark, "files sent inline unasked");
    closed.assert_refused("files sent inline unasked");
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn files_sent_whole_whose_chunks_cannot_be_right_are_refused() {
    let fix = Fixture::new();
    let data = pseudo_random(300 * KIB as usize, 12);
    let max = ChunkParams::default().max as usize;
    let bytes =
        |range: std::ops::Range<usize>| InlinePiece::New(ChunkBody::Bytes(data[range].to_vec()));
    let cases: Vec<(&str, Vec<InlinePiece>, bool, &str)> = vec![
        (
            "short",
            vec![bytes(0..max), bytes(max..2 * max)],
            false,
            "chunks add up to",
        ),
        (
            "long",
            vec![bytes(0..max + 1), bytes(max + 1..data.len())],
            false,
            "a chunk of",
        ),
        (
            "empty",
            vec![
                bytes(0..0),
                bytes(0..max),
                bytes(max..2 * max),
                bytes(2 * max..data.len()),
            ],
            false,
            "a chunk of 0 bytes",
        ),
        (
            "listed",
            vec![
                bytes(0..max),
                bytes(max..2 * max),
                bytes(2 * max..data.len()),
            ],
            true,
            "sent whole with a chunk list",
        ),
    ];
    for (name, pieces, listed, reason) in cases {
        let mark = fix.log_mark();
        let entry = file_entry(name, &data, 1);
        let mut bare = entry.clone();
        bare.content = None;
        let closed = block_on(async {
            let mut s = fix.open().await;
            send(&mut s, &index_frame(true, vec![bare.clone()])).await;
            match recv(&mut s).await {
                Frame::NeedContent(n) => assert!(n.inline, "an empty target asks inline: {n:?}"),
                other => panic!("no chunk list was sent, so NeedContent was due, got {other:?}"),
            }
            let entry = if listed { entry } else { bare };
            send_files(&mut s, vec![InlineFile { entry, pieces }]).await;
            until_closed(&mut s).await
        });
        fix.wait_log_since(mark, reason);
        closed.assert_refused(reason);
        assert!(
            !exists(&fix.dst.join(name)),
            "{name}: a file of chunks that cannot be right appeared in the target"
        );
    }
    fix.assert_still_serves_and_nothing_escaped();
}

// ---------------------------------------------------------------------------------------------
// Folders
// ---------------------------------------------------------------------------------------------

#[test]
fn a_folder_not_shared_with_the_peer_is_refused() {
    let fix = Fixture::with_unshared_folder();
    let other = fix.tmp.path().join("other");
    for folder in ["other", "nosuch", "../outside", "/"] {
        // The wire may carry any text; a name that is no folder id fails as it is decoded.
        let wire = with_text_replaced(&open_frame(PLACEHOLDER), PLACEHOLDER, folder);
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.at(Stage::Greeted).await;
            send_raw(&mut s, &wire).await;
            until_closed(&mut s).await
        });
        eprintln!("open {folder:?}: {closed:?}");
        assert!(
            !closed.frames.iter().any(|f| matches!(f, Frame::Opened(_))),
            "folder {folder:?} was opened: {closed:?}"
        );
        let needle = if FolderId::new(folder).is_ok() {
            format!(
                "folder {folder} is not shared with node {}",
                fix.client.id()
            )
        } else {
            format!("invalid folder id {folder:?}")
        };
        closed.assert_refused(&needle);
        fix.wait_log_since(mark, &needle);
    }
    assert!(
        snapshot(&other).is_empty(),
        "the unshared folder was written"
    );
    fix.assert_still_serves_and_nothing_escaped();
}

/// A snapshot with one file entry whose chunk list travels as `outline` (the entry says
/// `size` bytes, and `id` is the content the rebuilt list must have).
fn outlined_frame(path: &str, size: u64, id: ContentId, outline: Outline) -> Frame {
    let entry = FileEntry {
        size,
        mode: 0o644,
        ..entry(path, EntryKind::File, 1)
    };
    let Frame::Index(mut part) = index_frame(true, vec![entry]) else {
        unreachable!("index_frame makes an Index frame")
    };
    part.delta.lists = vec![ChunkList {
        path: rel(path),
        id,
        form: ListForm::Outline(outline),
    }];
    Frame::Index(part)
}

/// Sends `path` (of `size` bytes, content `id`) outlined as `o` to a target holding nothing,
/// and returns the groups it asks for.
async fn outline_and_take_request(
    s: &mut Tls,
    path: &str,
    size: u64,
    id: ContentId,
    o: &Outline,
) -> ferry_actors::messages::NeedGroups {
    send(s, &outlined_frame(path, size, id, o.clone())).await;
    match recv(s).await {
        Frame::NeedGroups(n) => n,
        other => panic!("the target holds nothing, so NeedGroups was due, got {other:?}"),
    }
}

/// Answers a group request for `path` (content `id`) with `groups`.
async fn send_groups(s: &mut Tls, path: &str, id: ContentId, groups: Vec<GroupList>) {
    let reply = GroupData {
        folder: folder_id(FOLDER),
        path: rel(path),
        id,
        groups,
        stale: false,
    };
    send(s, &Frame::Groups(reply)).await;
}

#[test]
fn outlines_claiming_impossible_lists_are_refused_before_they_are_built() {
    let fix = Fixture::new();
    let content = chunk_reader(
        pseudo_random(300 * KIB as usize, 11).as_slice(),
        &ChunkParams::default(),
    )
    .expect("chunk in memory");
    let group = outline(&content).groups[0];

    // One group named 600,000 times over: 19 MB of frame for 154 million chunks (5.5 GB
    // rebuilt), under a size claim that allows them.
    let repeated = Outline {
        groups: vec![
            Group {
                id: group.id,
                chunks: 256
            };
            600_000
        ],
    };
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.open().await;
        send(
            &mut s,
            &outlined_frame("huge", u64::MAX / 2, content.id, repeated),
        )
        .await;
        until_closed(&mut s).await
    });
    fix.wait_log_since(mark, "over the limit");
    closed.assert_refused("over the limit");

    // A group of more chunks than any outline cuts.
    let oversized = Outline {
        groups: vec![Group {
            id: group.id,
            chunks: 100_000,
        }],
    };
    let mark = fix.log_mark();
    let closed = block_on(async {
        let mut s = fix.open().await;
        send(
            &mut s,
            &outlined_frame("odd", 1 << 40, content.id, oversized),
        )
        .await;
        until_closed(&mut s).await
    });
    fix.wait_log_since(mark, "impossible size");
    closed.assert_refused("impossible size");
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn groups_not_in_the_outline_or_not_matching_their_ids_are_refused() {
    let fix = Fixture::new();
    let data = pseudo_random(2 << 20, 12);
    let content = chunk_reader(data.as_slice(), &ChunkParams::default()).expect("chunk in memory");
    let o = outline(&content);
    let other = chunk_reader(
        pseudo_random(2 << 20, 13).as_slice(),
        &ChunkParams::default(),
    )
    .expect("chunk in memory");

    for (case, needle) in [
        ("unasked", "not in its outline or not matching"),
        ("forged", "not in its outline or not matching"),
    ] {
        let mark = fix.log_mark();
        let closed = block_on(async {
            let mut s = fix.open().await;
            let need =
                outline_and_take_request(&mut s, "f", data.len() as u64, content.id, &o).await;
            assert_eq!(need.groups.len(), o.groups.len(), "{need:?}");
            let groups = match case {
                // A group of another file, under its own (true) id: never asked for.
                "unasked" => vec![GroupList {
                    id: outline(&other).groups[0].id,
                    chunks: other.chunks[..outline(&other).groups[0].chunks as usize].to_vec(),
                }],
                // The id asked for, with other chunks (of the same count) under it.
                _ => vec![GroupList {
                    id: need.groups[0],
                    chunks: other.chunks[..o.groups[0].chunks as usize].to_vec(),
                }],
            };
            send_groups(&mut s, "f", content.id, groups).await;
            until_closed(&mut s).await
        });
        eprintln!("{case}: {closed:?}");
        fix.wait_log_since(mark, needle);
        closed.assert_refused(needle);
    }
    fix.assert_dst_empty();
    fix.assert_still_serves_and_nothing_escaped();
}

/// A reply that leaves out groups asked for: once every request is answered, the server
/// asks for the file's content again instead of waiting for them forever, without a word.
#[test]
fn groups_left_out_of_a_reply_are_asked_for_again() {
    let fix = Fixture::new();
    let data = pseudo_random(2 << 20, 14);
    let content = chunk_reader(data.as_slice(), &ChunkParams::default()).expect("chunk in memory");
    let o = outline(&content);

    block_on(async {
        let mut s = fix.open().await;
        let need = outline_and_take_request(&mut s, "f", data.len() as u64, content.id, &o).await;
        assert!(need.groups.len() > 1, "{need:?}");
        // Only the first group: the others are left out.
        let first = GroupList {
            id: o.groups[0].id,
            chunks: content.chunks[..o.groups[0].chunks as usize].to_vec(),
        };
        send_groups(&mut s, "f", content.id, vec![first]).await;
        match recv(&mut s).await {
            Frame::NeedContent(n) => assert!(
                n.paths.iter().any(|p| p.as_str() == "f"),
                "the content asked for again is another file's: {n:?}"
            ),
            other => panic!("the server should ask for f's content again, got {other:?}"),
        }
    });
    fix.assert_still_serves_and_nothing_escaped();
}

#[test]
fn a_group_named_twice_in_an_outline_may_be_supplied_twice() {
    // A file of one 8 KiB block over and over (as runs of zeros are): its outline names
    // one group twice, and a Sender (one of an earlier version) answers with a copy per
    // mention. The copy is no protocol error: the file is written.
    let fix = Fixture::new();
    let params = ChunkParams::default();
    let (block, content) = (1u64..)
        .find_map(|seed| {
            let block = pseudo_random(8 * KIB as usize, seed);
            let one = chunk_reader(block.as_slice(), &params).expect("chunk in memory");
            let content = ferry_engine::Content::from_chunks(&params, vec![one.chunks[0]; 512]);
            let o = outline(&content);
            (o.groups.len() == 2 && o.groups[0].id == o.groups[1].id).then_some((block, content))
        })
        .expect("a block whose id does not end a group");
    let data: Vec<u8> = block.repeat(512);
    let o = outline(&content);

    let closed = block_on(async {
        let mut s = fix.open().await;
        let need = outline_and_take_request(&mut s, "r", data.len() as u64, content.id, &o).await;
        assert_eq!(
            need.groups,
            vec![o.groups[0].id],
            "each missing group asked for once"
        );
        let group = GroupList {
            id: o.groups[0].id,
            chunks: content.chunks[..256].to_vec(),
        };
        send_groups(&mut s, "r", content.id, vec![group.clone(), group]).await;
        answer_until_applied(&mut s, &[("r", &data)], 1).await
    });
    assert!(closed.is_none(), "the session ended: {closed:?}");
    assert_eq!(std::fs::read(fix.dst.join("r")).unwrap(), data);
    fix.assert_still_serves_and_nothing_escaped();
}

/// Greets and opens the folder with `params` (epoch 7, as `open_frame`), waiting while the
/// server still holds the folder for a session that just ended; returns the stream and
/// the sequence the server says it applied for that epoch.
async fn open_with(fix: &Fixture, params: ChunkParams) -> (Tls, Seq) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = fix.at(Stage::Greeted).await;
        let Frame::Open(mut open) = open_frame(FOLDER) else {
            unreachable!("open_frame makes an Open")
        };
        open.params = params;
        send(&mut s, &Frame::Open(open)).await;
        match recv(&mut s).await {
            Frame::Opened(o) => return (s, o.applied),
            Frame::Refused(r) if !r.permanent && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the server answered Open with {other:?}"),
        }
    }
}

#[test]
fn a_resume_point_serves_only_the_chunker_parameters_it_was_made_with() {
    // A session applies seq 1 and ends: the next one of the same epoch resumes after it,
    // but not one whose chunk lists are cut otherwise (its view would not match them).
    let fix = Fixture::new();
    let data = pseudo_random(20 * KIB as usize, 40);
    block_on(async {
        let (mut s, applied) = open_with(&fix, ChunkParams::default()).await;
        assert_eq!(applied, Seq(0));
        send(&mut s, &index_frame(true, vec![file_entry("f", &data, 1)])).await;
        assert!(answer_until_applied(&mut s, &[("f", &data)], 1)
            .await
            .is_none());
    });
    let resumed = block_on(async { open_with(&fix, ChunkParams::default()).await.1 });
    assert_eq!(resumed, Seq(1), "the same parameters resume");
    let other = ChunkParams::new(4 * 1024, 16 * 1024, 64 * 1024).expect("valid sizes");
    let resumed = block_on(async { open_with(&fix, other).await.1 });
    assert_eq!(resumed, Seq(0), "other parameters must start afresh");
    fix.assert_still_serves_and_nothing_escaped();
}
