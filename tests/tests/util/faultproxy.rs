//! A TCP proxy on 127.0.0.1 that injects link faults: it forwards every connection it accepts
//! to one upstream address and, per direction, delays, truncates, resets or corrupts what it
//! carries, following a [`Plan`] the test can change at any time.
//!
//! The proxy runs on its own small tokio runtime, so that tests driving `ferry` processes
//! from plain threads can use it; dropping the [`FaultProxy`] stops it and closes every
//! connection.
//!
//! ```text
//! let proxy = FaultProxy::start(server_addr);
//! proxy.set_plan(Plan::one_shot(Fault::Truncate { after_bytes: 5 * MIB }, Fault::None));
//! // … point the client at proxy.addr() …
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// How much one read of a pump takes at most: one "chunk" as far as [`Fault::Delay`] goes.
const CHUNK: usize = 64 * 1024;

/// What the proxy does to the bytes of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// Wait this long before forwarding each chunk read.
    Delay(Duration),
    /// Forward the first `after_bytes` bytes, then close both sides of the connection
    /// (a FIN each way, as a peer or middlebox hanging up would).
    Truncate {
        /// Bytes forwarded in this direction before the connection is closed.
        after_bytes: u64,
    },
    /// Forward the first `after_bytes` bytes, then reset both sides of the connection
    /// (`SO_LINGER` 0, so each side gets an RST rather than a FIN).
    Reset {
        /// Bytes forwarded in this direction before the connection is reset.
        after_bytes: u64,
    },
    /// Flip every bit of one byte at offset `after_bytes`, then of one byte every `every`
    /// bytes after it, forwarding everything else unchanged.
    Corrupt {
        /// Offset, in this direction's byte stream, of the first byte corrupted.
        after_bytes: u64,
        /// Distance between two corrupted bytes (at least 1).
        every: u64,
    },
}

/// Which connections a [`Plan`]'s faults apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every connection accepted while the plan is in force.
    Always,
    /// Only the next `n` connections accepted after the plan was set; later ones are
    /// forwarded clean, so that a link can recover.
    OneShot(u64),
}

/// The faults applied to both directions of a connection, and to which connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What happens to bytes going from the client to the upstream server.
    pub client_to_server: Fault,
    /// What happens to bytes going from the upstream server to the client.
    pub server_to_client: Fault,
    /// Which connections the faults apply to.
    pub scope: Scope,
}

impl Plan {
    /// No fault: a plain proxy.
    pub const CLEAN: Plan = Plan {
        client_to_server: Fault::None,
        server_to_client: Fault::None,
        scope: Scope::Always,
    };

    /// The faults applied to the first connection accepted from now on only.
    pub fn one_shot(client_to_server: Fault, server_to_client: Fault) -> Plan {
        Plan {
            client_to_server,
            server_to_client,
            scope: Scope::OneShot(1),
        }
    }

    /// The faults applied to every connection.
    pub fn always(client_to_server: Fault, server_to_client: Fault) -> Plan {
        Plan {
            client_to_server,
            server_to_client,
            scope: Scope::Always,
        }
    }
}

/// A direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream server.
    ClientToServer,
    /// From the upstream server to the client.
    ServerToClient,
}

/// The counters of a proxy, shared with its connection tasks.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    faulted: AtomicU64,
    truncated: AtomicU64,
    reset: AtomicU64,
    corrupted: AtomicU64,
    c2s: AtomicU64,
    s2c: AtomicU64,
}

/// The plan in force and how many more connections it applies to.
#[derive(Debug)]
struct Current {
    plan: Plan,
    /// For [`Scope::OneShot`]: connections still to be faulted.
    left: u64,
}

impl Current {
    /// The faults for a connection being accepted now (and uses up one of a one-shot plan).
    fn take(&mut self) -> Option<(Fault, Fault)> {
        let faults = (self.plan.client_to_server, self.plan.server_to_client);
        if faults == (Fault::None, Fault::None) {
            return None;
        }
        match self.plan.scope {
            Scope::Always => Some(faults),
            Scope::OneShot(_) if self.left > 0 => {
                self.left -= 1;
                Some(faults)
            }
            Scope::OneShot(_) => None,
        }
    }
}

/// A fault-injecting proxy in front of one upstream address. See the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
    current: Arc<Mutex<Current>>,
    /// Owns the accept loop and every connection; dropping it stops them all.
    runtime: Option<Runtime>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards each connection to `upstream`,
    /// clean until [`FaultProxy::set_plan`] says otherwise.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faultproxy")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("the proxy's runtime: {e}"));
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("the proxy cannot listen: {e}"));
        let addr = listener.local_addr().expect("the proxy's address");
        let counts = Arc::new(Counts::default());
        let current = Arc::new(Mutex::new(Current {
            plan: Plan::CLEAN,
            left: 0,
        }));
        let (c, p) = (counts.clone(), current.clone());
        runtime.spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    // Retrying at once could spin; the test's waits will time out and say
                    // what was not reached.
                    Err(e) => return eprintln!("the fault proxy stops accepting: {e}"),
                };
                c.accepted.fetch_add(1, Ordering::Relaxed);
                let faults = p.lock().expect("the plan lock").take();
                if faults.is_some() {
                    c.faulted.fetch_add(1, Ordering::Relaxed);
                }
                let (up, down) = faults.unwrap_or((Fault::None, Fault::None));
                tokio::spawn(connection(client, upstream, up, down, c.clone()));
            }
        });
        FaultProxy {
            addr,
            counts,
            current,
            runtime: Some(runtime),
        }
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Puts `plan` in force for connections accepted from now on (open ones keep theirs).
    pub fn set_plan(&self, plan: Plan) {
        let left = match plan.scope {
            Scope::Always => 0,
            Scope::OneShot(n) => n,
        };
        *self.current.lock().expect("the plan lock") = Current { plan, left };
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Connections that were given a fault.
    pub fn faulted(&self) -> u64 {
        self.counts.faulted.load(Ordering::Relaxed)
    }

    /// Connections closed by a [`Fault::Truncate`].
    pub fn truncated(&self) -> u64 {
        self.counts.truncated.load(Ordering::Relaxed)
    }

    /// Connections reset by a [`Fault::Reset`].
    pub fn reset(&self) -> u64 {
        self.counts.reset.load(Ordering::Relaxed)
    }

    /// Bytes flipped by [`Fault::Corrupt`] and forwarded.
    pub fn corrupted(&self) -> u64 {
        self.counts.corrupted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded in `direction`, over all connections.
    pub fn bytes(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToServer => self.counts.c2s.load(Ordering::Relaxed),
            Direction::ServerToClient => self.counts.s2c.load(Ordering::Relaxed),
        }
    }

    /// A one-line summary of the counters, for logs and failure messages.
    pub fn summary(&self) -> String {
        format!(
            "proxy: {} connection(s) accepted, {} faulted, {} truncated, {} reset, \
             {} byte(s) corrupted; {} bytes client→server, {} bytes server→client",
            self.accepted(),
            self.faulted(),
            self.truncated(),
            self.reset(),
            self.corrupted(),
            self.bytes(Direction::ClientToServer),
            self.bytes(Direction::ServerToClient),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the tasks drops every socket they own; nothing waits for them.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How one pump ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its source closed (or failed); its sink was shut down for writing.
    Closed,
    /// A truncate fault fired: the whole connection is to be closed.
    Truncate,
    /// A reset fault fired: the whole connection is to be reset.
    Reset,
}

/// Carries one connection both ways until both directions have closed, or until a fault
/// cuts it; then closes (or resets) both sockets.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    up_fault: Fault,
    down_fault: Fault,
    counts: Arc<Counts>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let end = {
        let up = pump(&mut cr, &mut sw, up_fault, &counts, &counts.c2s);
        let down = pump(&mut sr, &mut cw, down_fault, &counts, &counts.s2c);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                e = &mut up, if !up_done => { up_done = true; e }
                e = &mut down, if !down_done => { down_done = true; e }
            };
            if end != End::Closed || (up_done && down_done) {
                break end;
            }
        }
    };
    match end {
        End::Closed => {}
        End::Truncate => {
            counts.truncated.fetch_add(1, Ordering::Relaxed);
            let _ = cw.shutdown().await;
            let _ = sw.shutdown().await;
        }
        End::Reset => {
            counts.reset.fetch_add(1, Ordering::Relaxed);
            // With a zero linger time, closing the socket aborts it: the peer gets an RST.
            let _ = cr.as_ref().set_zero_linger();
            let _ = sr.as_ref().set_zero_linger();
        }
    }
    // Returning drops both sockets.
}

/// Forwards `from` to `to`, applying `fault`, until `from` closes or the fault cuts the
/// connection; counts what it forwards in `carried_total`.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    fault: Fault,
    counts: &Counts,
    carried_total: &AtomicU64,
) -> End {
    let mut buf = vec![0u8; CHUNK];
    // Bytes of this direction forwarded so far (the offset of the next byte read).
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut forward = n;
        let mut cut = None;
        match fault {
            Fault::None => {}
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Truncate { after_bytes } | Fault::Reset { after_bytes } => {
                if carried + n as u64 >= after_bytes {
                    forward = after_bytes.saturating_sub(carried) as usize;
                    cut = Some(if matches!(fault, Fault::Truncate { .. }) {
                        End::Truncate
                    } else {
                        End::Reset
                    });
                }
            }
            Fault::Corrupt { after_bytes, every } => {
                let flipped = corrupt(&mut buf[..n], carried, after_bytes, every.max(1));
                counts.corrupted.fetch_add(flipped, Ordering::Relaxed);
            }
        }
        if to.write_all(&buf[..forward]).await.is_err() {
            break;
        }
        carried += forward as u64;
        carried_total.fetch_add(forward as u64, Ordering::Relaxed);
        if let Some(end) = cut {
            return end;
        }
    }
    let _ = to.shutdown().await;
    End::Closed
}

/// Flips every bit of the bytes of `buf` (which starts at stream offset `start`) whose offset
/// is `after` or `after + k * every`; returns how many it flipped.
fn corrupt(buf: &mut [u8], start: u64, after: u64, every: u64) -> u64 {
    let end = start + buf.len() as u64;
    // The first corrupted offset at or after `start`.
    let mut at = if start <= after {
        after
    } else {
        after + (start - after).div_ceil(every) * every
    };
    let mut flipped = 0;
    while at < end {
        buf[(at - start) as usize] ^= 0xFF;
        flipped += 1;
        at += every;
    }
    flipped
}

#[cfg(test)]
mod tests {
    use super::corrupt;

    #[test]
    fn corrupt_flips_bytes_at_the_offsets_across_reads() {
        let mut stream = [0u8; 100];
        // The same stream read in uneven pieces.
        let mut start = 0;
        for len in [7, 1, 30, 13, 49] {
            corrupt(&mut stream[start..start + len], start as u64, 10, 20);
            start += len;
        }
        let flipped: Vec<usize> = (0..100).filter(|&i| stream[i] == 0xFF).collect();
        assert_eq!(flipped, vec![10, 30, 50, 70, 90]);
    }
}
