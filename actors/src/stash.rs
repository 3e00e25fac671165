//! The Applier's inline content: the chunks of files a Sender sent whole, unasked
//! (`NeedContent::inline`), named by the Applier and kept until a plan writes them, and the
//! throttled content requests that bring them.
//!
//! A target holding no file content at all has nothing to reuse: it would ask for every
//! chunk of every file. Asking for small files whole lets the Sender read each file once
//! (and not name its chunks: the Applier names them from the bytes it is sent, which it
//! would otherwise hash to check them) and saves a round trip per file. The chunks kept
//! here are bounded: an inline request waits while a few content requests are
//! out (each is answered), a request made while much is kept asks for no chunks (a plan
//! that may not run yet, one that removes, must not stop content from coming), and what
//! arrives beyond the hard bound (each chunk counted with its bookkeeping) is dropped and
//! asked for later like any chunk. Every chunk kept was named or verified by the Applier
//! itself, so it is written without a second check; a remote sender sends files whole
//! only while the Applier asks for them so.
//!
//! It also keeps the chunks written last (bounded, oldest dropped first): a file started
//! later that needs one of them again, before any file holding it is installed and can be
//! copied from, is written from memory instead of asking for the chunk a second time.

use std::collections::{HashMap, VecDeque};

use ferry_engine::ChunkId;

use crate::messages::{ChunkBody, NeedContent};

/// An inline request waits while this many content requests are out.
const AHEAD: usize = 4;
/// A request made while this many bytes are kept asks for no chunks.
const SOFT_BYTES: u64 = 16 << 20;
/// Chunks beyond this many bytes kept are dropped.
const HARD_BYTES: u64 = 32 << 20;
/// What keeping a chunk costs besides its bytes (map entry, allocation): a sender cannot
/// make many tiny chunks cost nothing.
const ENTRY_BYTES: u64 = 128;
/// Bytes of chunks written last that are kept.
const RECENT_BYTES: u64 = 4 << 20;

/// Kept chunks and queued content requests.
#[derive(Debug, Default)]
pub(crate) struct Stash {
    chunks: HashMap<ChunkId, ChunkBody>,
    bytes: u64,
    queue: VecDeque<NeedContent>,
    /// Content requests sent and not answered yet (every one is answered once).
    out: usize,
    /// An inline request was sent and the content it brings is not all planned yet: only
    /// then may chunks arrive inline.
    open: bool,
    /// Chunks written last, and their order (an id may be listed twice; the older listing
    /// then evicts it early, which only costs a request).
    recent: HashMap<ChunkId, ChunkBody>,
    recent_order: VecDeque<ChunkId>,
    recent_bytes: u64,
}

impl Stash {
    /// Queues a content request; [`Stash::next_request`] says when it may go.
    pub(crate) fn push_request(&mut self, msg: NeedContent) {
        self.queue.push_back(msg);
    }

    /// The next content request that may be sent now, in order: an inline one waits while
    /// [`AHEAD`] requests are out; while [`SOFT_BYTES`] are kept it waits if `draining` (a
    /// plan is being applied: it takes kept chunks, and when it ends the queue is looked at
    /// again), else it asks for no chunks (no plan may run before this content is in).
    pub(crate) fn next_request(&mut self, draining: bool) -> Option<NeedContent> {
        let front = self.queue.front()?;
        let full = self.bytes >= SOFT_BYTES;
        if front.inline && (self.out >= AHEAD || (full && draining)) {
            return None;
        }
        let mut msg = self.queue.pop_front()?;
        if msg.inline && full {
            msg.inline = false;
        }
        self.open |= msg.inline;
        self.out += 1;
        Some(msg)
    }

    /// A content reply arrived.
    pub(crate) fn replied(&mut self) {
        self.out = self.out.saturating_sub(1);
    }

    /// Whether chunks may arrive inline now: an inline request was sent since the stash
    /// was last cleared.
    pub(crate) fn expects_inline(&self) -> bool {
        self.open
    }

    /// Keeps chunks that arrived inline, named here from their bytes, except those
    /// `requested` already (that request's answer will come) and those beyond
    /// [`HARD_BYTES`]. Returns the bytes dropped.
    pub(crate) fn keep(
        &mut self,
        chunks: impl IntoIterator<Item = (ChunkId, ChunkBody)>,
        requested: impl Fn(&ChunkId) -> bool,
    ) -> u64 {
        let mut dropped = 0;
        for (id, body) in chunks {
            let len = body.len();
            if requested(&id) || self.chunks.contains_key(&id) {
                continue;
            }
            if self.bytes + len + ENTRY_BYTES > HARD_BYTES {
                dropped += len;
                continue;
            }
            self.bytes += len + ENTRY_BYTES;
            self.chunks.insert(id, body);
        }
        dropped
    }

    /// Takes the chunk `id` if it is kept (sent inline, or written lately).
    pub(crate) fn take(&mut self, id: &ChunkId) -> Option<ChunkBody> {
        if let Some(body) = self.chunks.remove(id) {
            self.bytes -= body.len() + ENTRY_BYTES;
            return Some(body);
        }
        let body = self.recent.remove(id)?;
        self.recent_bytes -= body.len();
        Some(body)
    }

    /// Keeps a chunk just written, dropping the oldest beyond [`RECENT_BYTES`].
    pub(crate) fn remember(&mut self, id: ChunkId, body: ChunkBody) {
        let len = body.len();
        if len > RECENT_BYTES || self.recent.contains_key(&id) {
            return;
        }
        self.recent_bytes += len;
        self.recent.insert(id, body);
        self.recent_order.push_back(id);
        while self.recent_bytes > RECENT_BYTES {
            let Some(old) = self.recent_order.pop_front() else {
                break;
            };
            if let Some(b) = self.recent.remove(&old) {
                self.recent_bytes -= b.len();
            }
        }
        // Ids taken since they were listed pile up in the order: drop them now and then.
        if self.recent_order.len() > 4 * self.recent.len() + 1024 {
            let recent = &self.recent;
            self.recent_order.retain(|id| recent.contains_key(id));
        }
    }

    /// Drops every kept chunk (all content has arrived and been planned: what is left was
    /// not needed after all, e.g. a file that changed meanwhile).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
        self.open = false;
        self.recent.clear();
        self.recent_order.clear();
        self.recent_bytes = 0;
    }

    /// Bytes kept.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::FolderId;

    fn request(inline: bool) -> NeedContent {
        NeedContent {
            folder: FolderId::new("f").unwrap(),
            paths: Vec::new(),
            inline,
        }
    }

    fn chunk(n: u8, len: usize) -> (ChunkId, ChunkBody) {
        let data = vec![n; len];
        (ChunkId::of(&data), ChunkBody::Bytes(data))
    }

    #[test]
    fn inline_requests_wait_while_enough_are_out_and_plain_ones_do_not() {
        let mut s = Stash::default();
        assert!(!s.expects_inline());
        for _ in 0..AHEAD + 1 {
            s.push_request(request(true));
        }
        for _ in 0..AHEAD {
            assert!(s.next_request(false).is_some_and(|m| m.inline));
        }
        assert!(s.expects_inline());
        assert!(s.next_request(false).is_none(), "{AHEAD} requests are out");
        s.replied();
        assert!(s.next_request(false).is_some());
        assert!(s.next_request(false).is_none(), "the queue is empty");
        s.push_request(request(false));
        assert!(
            s.next_request(false).is_some(),
            "a plain request is not held back"
        );
        s.clear();
        assert!(
            !s.expects_inline(),
            "all content is in: nothing more comes inline"
        );
    }

    #[test]
    fn a_request_made_while_much_is_kept_asks_for_no_chunks() {
        let mut s = Stash::default();
        s.push_request(request(true));
        s.push_request(request(true));
        let big = 1 << 20;
        let n = SOFT_BYTES / (big as u64 + ENTRY_BYTES) + 1;
        let chunks: Vec<_> = (0..n as u8).map(|i| chunk(i, big)).collect();
        assert_eq!(s.keep(chunks, |_| false), 0);
        assert!(s.bytes() >= SOFT_BYTES);
        // Held back while a plan is applied (it takes kept chunks)...
        assert!(s.next_request(true).is_none());
        // ...not otherwise: the chunks kept may wait for a plan that waits for this content.
        assert!(s.next_request(false).is_some_and(|m| !m.inline));
        assert!(s.take(&chunk(0, big).0).is_some());
        assert!(s.take(&chunk(1, big).0).is_some());
        assert!(s.next_request(false).is_some_and(|m| m.inline));
    }

    #[test]
    fn keeps_each_chunk_once_within_the_hard_bound_and_never_a_requested_one() {
        let mut s = Stash::default();
        let a = chunk(1, 100);
        assert_eq!(s.keep(vec![a.clone(), a.clone()], |_| false), 0);
        assert_eq!(s.bytes(), 100 + ENTRY_BYTES);
        let b = chunk(2, 10);
        let b_id = b.0;
        assert_eq!(s.keep(vec![b], |id| *id == b_id), 0);
        assert!(s.take(&b_id).is_none(), "a requested chunk is not kept");
        // Tiny chunks cost their bookkeeping: a bounded number of them is kept.
        let tiny: Vec<_> = (0..HARD_BYTES / ENTRY_BYTES)
            .map(|i| (ChunkId::of(&i.to_le_bytes()), ChunkBody::Zeros(1)))
            .collect();
        assert!(s.keep(tiny, |_| false) > 0);
        assert!(s.bytes() <= HARD_BYTES);
        assert_eq!(s.take(&a.0), Some(a.1));
        s.clear();
        assert_eq!(s.bytes(), 0);
        assert!(s.take(&chunk(1, 100).0).is_none());
    }

    #[test]
    fn remembers_the_chunks_written_last_within_its_bound() {
        let mut s = Stash::default();
        let mib = 1 << 20;
        let first = chunk(0, mib);
        s.remember(first.0, first.1.clone());
        assert_eq!(s.take(&first.0), Some(first.1.clone()), "written lately");
        assert!(s.take(&first.0).is_none(), "taken once");
        let n = (RECENT_BYTES / mib as u64) as u8 + 1;
        for i in 0..n {
            let c = chunk(i, mib);
            s.remember(c.0, c.1);
        }
        assert!(s.take(&first.0).is_none(), "the oldest was dropped");
        assert!(s.take(&chunk(n - 1, mib).0).is_some(), "the newest is kept");
        assert!(s.recent_bytes <= RECENT_BYTES);
        assert_eq!(
            s.bytes(),
            0,
            "remembered chunks do not hold back inline requests"
        );
    }
}
