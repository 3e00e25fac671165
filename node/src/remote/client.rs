//! The client end of a link: `RemoteTarget`, an actor that stands in for an Applier on
//! another node. It carries the Sender's messages there as frames over mutual TLS, hands
//! the Applier's answers back, and reconnects with backoff when the link drops, telling
//! the Sender where the target's resume point is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use ferry_actors::health::Role;
use ferry_actors::messages::{ApplyCounts, ChunkData, GroupData, IndexDelta, Resend, Stop};
use ferry_actors::sender::TargetLink;
use ferry_actors::{FolderId, SenderSide, Stats, TargetConnector};
use ferry_engine::{ChunkParams, IgnoreRules, Seq};
use rustls::ClientConfig;
use tokio::io::{AsyncWriteExt, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::codec::{read_frame, read_frame_reusing, write_frame, write_frame_reusing};
use super::metered::{unless_silent, Metered, Stamp};
use super::parts::split_index;
use super::protocol::{Frame, Hello, Open, INDEX_PART_BYTES, MAX_FRAME, PROTOCOL_VERSION};
use super::tls;
use super::url::RemoteUrl;

type Stream = TlsStream<Metered<TcpStream>>;

/// Timing of a link: keepalives, timeouts and reconnection backoff.
#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    /// A ping is sent after this long without anything to send.
    pub keepalive: Duration,
    /// A peer silent for this long (no frame at all) is taken for dead.
    pub timeout: Duration,
    /// Time allowed for TCP connect, TLS handshake and greeting.
    pub connect_timeout: Duration,
    /// Delay before the first reconnection; doubled after each failure.
    pub backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            keepalive: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// When a link gives up.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Retry when the very first connection fails (a live mirror waits for its target; a
    /// one-shot sync reports it at once).
    pub first: bool,
    /// Consecutive failed attempts after which the link gives up (`None`: never).
    pub max_failures: Option<u32>,
}

/// Why a link went down, and whether trying again can help.
#[derive(Clone, Debug)]
pub struct LinkDown {
    /// What happened.
    pub reason: String,
    /// Trying again cannot help (wrong server, refused folder, version mismatch).
    pub permanent: bool,
}

impl LinkDown {
    fn transient(reason: impl Into<String>) -> Self {
        LinkDown {
            reason: reason.into(),
            permanent: false,
        }
    }

    fn permanent(reason: impl Into<String>) -> Self {
        LinkDown {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// Everything a `RemoteTarget` needs to reach its node.
#[derive(Clone)]
pub struct RemoteSpec {
    /// Node, address and folder.
    pub url: RemoteUrl,
    /// This node's TLS client configuration, pinned to `url.node`.
    pub tls: Arc<ClientConfig>,
    /// The source's chunker parameters.
    pub params: ChunkParams,
    /// Compare content even when size and mtime agree.
    pub checksum: bool,
    /// Plan only.
    pub dry_run: bool,
    /// The folder's ignore rules, sent to the server for its Applier (empty = none).
    pub ignore: IgnoreRules,
    /// Timing.
    pub link: LinkOptions,
    /// When to give up.
    pub retry: Retry,
    /// Wire counters.
    pub stats: Arc<Stats>,
    /// The epoch of a source index kept between runs (the same after a restart, so the
    /// target can resume); `None`: a new one for each link, as the index starts afresh.
    pub epoch: Option<u64>,
}

impl RemoteSpec {
    /// The connector a pipeline starts its remote target with.
    pub fn connector(self) -> TargetConnector {
        let spec = Arc::new(self);
        Arc::new(move |side: SenderSide| {
            let addr = RemoteTarget::new(spec.clone(), side).start();
            TargetLink {
                index: addr.clone().recipient(),
                chunks: addr.clone().recipient(),
                groups: addr.recipient(),
            }
        })
    }
}

/// Stands in for the Applier of one folder on another node.
pub struct RemoteTarget {
    spec: Arc<RemoteSpec>,
    side: SenderSide,
    /// Names this process's source index to the server: its sequence numbers mean
    /// nothing to another process's.
    epoch: u64,
    /// The current connection's outgoing frames.
    out: Option<mpsc::Sender<Frame>>,
    tasks: Vec<JoinHandle<()>>,
    generation: u64,
    connected_once: bool,
    failures: u32,
}

/// The link of generation `generation` went down.
#[derive(Message)]
#[rtype(result = "()")]
struct Down {
    generation: u64,
    why: LinkDown,
}

impl RemoteTarget {
    /// A link for `side`'s Sender to the node `spec` names.
    pub fn new(spec: Arc<RemoteSpec>, side: SenderSide) -> Self {
        let epoch = spec.epoch.unwrap_or_else(|| rand::random::<u64>() | 1);
        RemoteTarget {
            spec,
            side,
            epoch,
            out: None,
            tasks: Vec::new(),
            generation: 0,
            connected_once: false,
            failures: 0,
        }
    }

    fn folder(&self) -> &FolderId {
        &self.spec.url.folder
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let spec = self.spec.clone();
        let epoch = self.epoch;
        let attempt = async move {
            tokio::time::timeout(spec.link.connect_timeout, handshake(&spec, epoch))
                .await
                .unwrap_or_else(|_| {
                    Err(LinkDown::transient(format!(
                        "no answer within {:?}",
                        spec.link.connect_timeout
                    )))
                })
        };
        ctx.spawn(attempt.into_actor(self).map(move |res, act, ctx| {
            if generation != act.generation {
                return;
            }
            match res {
                Ok((stream, applied)) => act.up(stream, applied, ctx),
                Err(why) => act.down(why, ctx),
            }
        }));
    }

    fn up(&mut self, stream: Stream, applied: Seq, ctx: &mut Context<Self>) {
        let url = &self.spec.url;
        tracing::info!(folder = %self.folder(), node = %url.node, host = %url.host, port = url.port, applied = applied.0, "link up");
        let (tx, rx) = mpsc::channel(16);
        let heard = stream.get_ref().0.heard();
        let (r, w) = tokio::io::split(stream);
        let me = ctx.address().downgrade();
        let generation = self.generation;
        let report = move |why: LinkDown| {
            if let Some(a) = me.upgrade() {
                a.do_send(Down { generation, why });
            }
        };
        let link = self.spec.link;
        let folder = self.folder().clone();
        let side = self.side.clone();
        let pongs = tx.clone();
        let report_r = report.clone();
        let stats = self.spec.stats.clone();
        self.tasks.push(actix::spawn(async move {
            report_r(read_loop(r, heard, folder, side, pongs, link, stats).await);
        }));
        let open = WriterOpen::new();
        self.tasks.push(actix::spawn(async move {
            let _open = open;
            report(write_loop(w, rx, link).await);
        }));
        self.out = Some(tx);
        if self.connected_once {
            Stats::add(&self.spec.stats.reconnects, 1);
        }
        self.spec.stats.link.up();
        // The Differ sends nothing to a remote target until it states what it holds; after
        // a reconnect, whatever was sent since its resume point may be lost: send it again.
        self.side.resend.do_send(Resend { after: applied });
        self.connected_once = true;
        self.failures = 0;
    }

    fn down(&mut self, why: LinkDown, ctx: &mut Context<Self>) {
        let url = &self.spec.url;
        self.spec.stats.link.down(why.reason.clone());
        self.out = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.generation += 1;
        self.failures += 1;
        let give_up = why.permanent
            || (!self.connected_once && !self.spec.retry.first)
            || self
                .spec
                .retry
                .max_failures
                .is_some_and(|max| self.failures >= max);
        if give_up {
            let reason = format!("link to {url} failed: {}", why.reason);
            tracing::error!(folder = %self.folder(), "{reason}");
            self.side
                .link
                .failed
                .do_send(ferry_actors::messages::ApplyFailed {
                    folder: self.folder().clone(),
                    reason,
                });
            // No reconnection: what the Sender still sends is dropped until the pipeline,
            // told of the failure, stops or restarts.
            return;
        }
        let delay = backoff(&self.spec.link, self.failures);
        tracing::warn!(folder = %self.folder(), attempt = self.failures, "link to {url} down: {}; retrying in {delay:?}", why.reason);
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    /// Queues `frames` on the current connection (in order, waiting for room); frames for
    /// a link that is down are dropped and made up for by a resend after reconnection.
    fn send_frames(&mut self, frames: Vec<Frame>) -> ResponseFuture<()> {
        let Some(out) = self.out.clone() else {
            return Box::pin(async {});
        };
        Box::pin(async move {
            for f in frames {
                if out.send(f).await.is_err() {
                    break;
                }
            }
        })
    }
}

/// The delay before attempt `failures` (1-based): doubling from the base, capped.
fn backoff(link: &LinkOptions, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    link.backoff.saturating_mul(factor).min(link.max_backoff)
}

/// Connects, authenticates, greets and opens the folder; returns the stream and the
/// target's resume point.
async fn handshake(spec: &RemoteSpec, epoch: u64) -> Result<(Stream, Seq), LinkDown> {
    let url = &spec.url;
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| LinkDown::transient(format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tcp = Metered::new(tcp, spec.stats.clone());
    let mut stream = TlsConnector::from(spec.tls.clone())
        .connect(tls::server_name(), tcp)
        .await
        .map_err(tls_failure)?;
    write_frame(&mut stream, &Frame::Hello(Hello::ours()))
        .await
        .map_err(|e| LinkDown::transient(e.to_string()))?;
    stream.flush().await.map_err(tls_failure)?;
    match read_frame(&mut stream, MAX_FRAME).await {
        Ok(Some(Frame::Hello(h))) if h.version == PROTOCOL_VERSION => {}
        Ok(Some(Frame::Hello(h))) => {
            return Err(LinkDown::permanent(format!(
                "the server speaks protocol version {} ({}), this node {PROTOCOL_VERSION}",
                h.version, h.software
            )))
        }
        other => return Err(unexpected(other, "Hello")),
    }
    let open = Open {
        folder: url.folder.clone(),
        epoch,
        params: spec.params,
        checksum: spec.checksum,
        dry_run: spec.dry_run,
        ignore: spec.ignore.patterns().to_vec(),
    };
    write_frame(&mut stream, &Frame::Open(open))
        .await
        .map_err(|e| LinkDown::transient(e.to_string()))?;
    stream.flush().await.map_err(tls_failure)?;
    // The server may ping while it waits for an earlier session of this node to end.
    loop {
        match read_frame(&mut stream, MAX_FRAME).await {
            Ok(Some(Frame::Ping(_) | Frame::Pong(_))) => continue,
            Ok(Some(Frame::Opened(o))) if o.folder == url.folder => return Ok((stream, o.applied)),
            other => return Err(unexpected(other, "Opened")),
        }
    }
}

/// A link failure from what came instead of the frame `wanted`.
fn unexpected(got: Result<Option<Frame>, super::codec::FrameError>, wanted: &str) -> LinkDown {
    match got {
        Ok(Some(Frame::Refused(r))) => LinkDown {
            reason: format!("the server refused: {}", r.reason),
            permanent: r.permanent,
        },
        Ok(Some(f)) => LinkDown::permanent(format!(
            "protocol error: the server sent {} where {wanted} was due",
            f.kind()
        )),
        Ok(None) => LinkDown::transient("the server closed the connection"),
        Err(super::codec::FrameError::Io(e)) => tls_failure(e),
        Err(e) => LinkDown::permanent(format!("protocol error: {e}")),
    }
}

/// Classifies an I/O error of the TLS stream: certificate trouble is permanent.
fn tls_failure(e: std::io::Error) -> LinkDown {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) | Some(rustls::Error::General(_)) => {
            LinkDown::permanent(format!(
                "the server is not the node pinned: {}",
                tls::explain(&e)
            ))
        }
        Some(rustls::Error::AlertReceived(alert)) if refuses_certificate(*alert) => {
            LinkDown::permanent(format!(
                "the server refused this node's certificate ({alert:?}): is this node's id among its --peer ids?"
            ))
        }
        // Anything else TLS reports about records (a corrupt, undecryptable or oversized
        // one, or the server's alert about ours) is the link damaging bytes: TLS caught it,
        // nothing wrong was used, and a new connection may well be clean.
        Some(other) => LinkDown::transient(format!("TLS failed: {other}")),
        None => LinkDown::transient(format!("connection lost: {e}")),
    }
}

/// True for the alerts a server sends when it will not accept this node's certificate.
fn refuses_certificate(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired
            | A::HandshakeFailure
    )
}

/// Reads the server's frames and hands them to the Sender until the link fails.
async fn read_loop(
    mut r: ReadHalf<Stream>,
    heard: Stamp,
    folder: FolderId,
    side: SenderSide,
    out: mpsc::Sender<Frame>,
    link: LinkOptions,
    stats: Arc<Stats>,
) -> LinkDown {
    // The remote Applier's totals for this connection, as last reported.
    let mut counts = ApplyCounts::default();
    let gone = |e: actix::MailboxError| LinkDown::permanent(format!("the sender is gone: {e}"));
    let mut body = Vec::new();
    loop {
        let read = read_frame_reusing(&mut r, MAX_FRAME, &mut body);
        let frame = match unless_silent(read, &heard, link.timeout).await {
            None => {
                return LinkDown::transient(format!(
                    "nothing heard from the server for {:?}",
                    link.timeout
                ))
            }
            Some(Ok(Some(f))) => f,
            Some(other) => return unexpected(other, "a message"),
        };
        let wrong_folder = |f: &FolderId| {
            LinkDown::permanent(format!(
                "protocol error: a message for folder {f} on the link of folder {folder}"
            ))
        };
        let delivered = match frame {
            Frame::NeedContent(m) if m.folder == folder => side.link.need_content.send(m).await,
            Frame::NeedChunks(m) if m.folder == folder => side.link.need_chunks.send(m).await,
            Frame::NeedGroups(m) if m.folder == folder => side.link.need_groups.send(m).await,
            Frame::Applied(m) if m.folder == folder => {
                stats.add_apply_counts(&counts, &m.counts);
                counts = m.counts.clone();
                side.link.applied.send(m).await
            }
            Frame::ApplyFailed(m) if m.folder == folder => side.link.failed.send(m).await,
            Frame::NeedContent(m) => return wrong_folder(&m.folder),
            Frame::NeedChunks(m) => return wrong_folder(&m.folder),
            Frame::NeedGroups(m) => return wrong_folder(&m.folder),
            Frame::Applied(m) => return wrong_folder(&m.folder),
            Frame::ApplyFailed(m) => return wrong_folder(&m.folder),
            Frame::Ping(n) => {
                let _ = out.send(Frame::Pong(n)).await;
                Ok(())
            }
            Frame::Pong(_) => Ok(()),
            other => return unexpected(Ok(Some(other)), "a target's message"),
        };
        if let Err(e) = delivered {
            return gone(e);
        }
    }
}

/// Link writers still running in this process: each sends what is queued and then closes
/// its TLS session once its link is let go ([`links_closed`] waits for them).
static OPEN_WRITERS: AtomicUsize = AtomicUsize::new(0);

/// Told when the last of [`OPEN_WRITERS`] ends.
fn writers_done() -> &'static Notify {
    static DONE: OnceLock<Notify> = OnceLock::new();
    DONE.get_or_init(Notify::new)
}

/// One of [`OPEN_WRITERS`], for as long as its writer task lives (ended or aborted).
struct WriterOpen;

impl WriterOpen {
    fn new() -> Self {
        OPEN_WRITERS.fetch_add(1, Ordering::AcqRel);
        WriterOpen
    }
}

impl Drop for WriterOpen {
    fn drop(&mut self) {
        if OPEN_WRITERS.fetch_sub(1, Ordering::AcqRel) == 1 {
            writers_done().notify_waiters();
        }
    }
}

/// Waits, at most `deadline`, until every link writer of this process has ended: what was
/// queued is sent and each TLS session is closed (`close_notify`), so the server sees a
/// clean end rather than a cut connection. A one-shot run calls it after its pipeline
/// stopped and before the process exits.
pub async fn links_closed(deadline: Duration) {
    let all_ended = async {
        loop {
            let notified = writers_done().notified();
            tokio::pin!(notified);
            // Registered before the count is read, so an end in between is not missed.
            notified.as_mut().enable();
            if OPEN_WRITERS.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(deadline, all_ended).await;
}

/// Frames written before a flush, at most (a full queue still flushes regularly).
const FRAMES_PER_FLUSH: usize = 16;

/// A writer's buffer: the small pieces of a frame (its head, small chunks) go out together,
/// larger chunks straight from their own buffers.
const WRITE_BUFFER: usize = 64 << 10;

/// Writes queued frames, flushing when the queue runs dry, and pings when idle. A peer
/// that takes no bytes for `link.timeout` is dead (a slow link that keeps taking bytes is
/// not). A refusal is the last frame: the stream is shut down after it.
pub(crate) async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Frame>,
    link: LinkOptions,
) -> LinkDown {
    let w = Progress::new(w);
    let stamp = w.stamp.clone();
    let mut w = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, w);
    let mut head = Vec::new();
    let mut pings = 0u64;
    loop {
        let next = tokio::time::timeout(link.keepalive, rx.recv()).await;
        let frame = match next {
            Ok(Some(f)) => f,
            // Every sender is gone: the link is being shut down; close TLS properly.
            Ok(None) => {
                let _ = tokio::time::timeout(link.timeout, w.shutdown()).await;
                return LinkDown::transient("link closed");
            }
            Err(_) => {
                pings += 1;
                Frame::Ping(pings)
            }
        };
        stamp.touch();
        let batch = async {
            let mut last = matches!(frame, Frame::Refused(_));
            write_frame_reusing(&mut w, &frame, &mut head).await?;
            for _ in 1..FRAMES_PER_FLUSH {
                if last {
                    break;
                }
                let Ok(f) = rx.try_recv() else { break };
                last = matches!(f, Frame::Refused(_));
                write_frame_reusing(&mut w, &f, &mut head).await?;
            }
            w.flush().await?;
            if last {
                w.shutdown().await?;
            }
            Ok::<_, super::codec::FrameError>(last)
        };
        tokio::pin!(batch);
        let written = loop {
            tokio::select! {
                r = &mut batch => break Some(r),
                _ = tokio::time::sleep(link.timeout / 4) => {
                    if stamp.idle() > link.timeout {
                        break None;
                    }
                }
            }
        };
        match written {
            Some(Ok(true)) => return LinkDown::permanent("refused the peer"),
            Some(Ok(false)) => {}
            Some(Err(super::codec::FrameError::TooLarge { len, max })) => {
                return LinkDown::permanent(format!(
                    "a message of {len} bytes is over the {max}-byte frame limit (a file too large for this version's chunk lists?)"
                ))
            }
            Some(Err(e)) => return LinkDown::transient(format!("cannot send: {e}")),
            None => {
                return LinkDown::transient(format!(
                    "the peer took no data for {:?}",
                    link.timeout
                ))
            }
        }
    }
}

/// A writer that stamps the time of every write that takes bytes.
struct Progress<W> {
    inner: W,
    stamp: Stamp,
}

impl<W> Progress<W> {
    fn new(inner: W) -> Self {
        Progress {
            inner,
            stamp: Stamp::new(),
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Progress<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.stamp.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.stamp.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Actor for RemoteTarget {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(actor = "link", folder = %self.folder(), "started");
        self.spec.stats.actors.started("link");
        self.spec.stats.link.down("connecting");
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The reader goes at once; the writer sends what is queued, then closes the TLS
        // session once the last sender of its queue (ours, the reader's) is gone.
        self.out = None;
        if let Some(reader) = self.tasks.first() {
            reader.abort();
        }
        tracing::info!(actor = "link", folder = %self.folder(), "stopped");
        self.spec.stats.actors.stopped("link");
    }
}

impl Handler<Down> for RemoteTarget {
    type Result = ();

    fn handle(&mut self, msg: Down, ctx: &mut Self::Context) {
        if msg.generation == self.generation {
            self.down(msg.why, ctx);
        }
    }
}

impl Handler<IndexDelta> for RemoteTarget {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: IndexDelta, _: &mut Self::Context) -> Self::Result {
        self.spec.stats.actors.handled(Role::Target);
        let frames = split_index(msg, INDEX_PART_BYTES)
            .into_iter()
            .map(Frame::Index)
            .collect();
        self.send_frames(frames)
    }
}

impl Handler<ChunkData> for RemoteTarget {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: ChunkData, _: &mut Self::Context) -> Self::Result {
        self.spec.stats.actors.handled(Role::Target);
        self.send_frames(vec![Frame::Chunks(msg)])
    }
}

impl Handler<GroupData> for RemoteTarget {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: GroupData, _: &mut Self::Context) -> Self::Result {
        self.spec.stats.actors.handled(Role::Target);
        self.send_frames(vec![Frame::Groups(msg)])
    }
}

impl Handler<Stop> for RemoteTarget {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let link = LinkOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..LinkOptions::default()
        };
        assert_eq!(backoff(&link, 1), Duration::from_millis(100));
        assert_eq!(backoff(&link, 2), Duration::from_millis(200));
        assert_eq!(backoff(&link, 4), Duration::from_millis(800));
        assert_eq!(backoff(&link, 5), Duration::from_secs(1));
        assert_eq!(backoff(&link, 1000), Duration::from_secs(1));
    }
}
