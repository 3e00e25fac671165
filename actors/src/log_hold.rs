//! Log lines held back on a thread while it reports a batch of changes, then written to
//! standard error with one call: an initial copy of 10,000 files logs 10,000 lines, and
//! a `write` for each cost the receiving Applier's thread ~10 ms.

use std::cell::RefCell;
use std::io::{self, Write};

/// Held lines are written out once they reach this many bytes, hold or not.
const HELD_MAX: usize = 64 << 10;

thread_local! {
    /// This thread's held lines, while it holds them.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// While alive, the lines this thread writes to [`Stderr`] are held; dropped (also while
/// unwinding from a panic), it writes them. A hold taken while another is alive joins it.
#[must_use = "lines are held only while the hold is alive"]
pub struct Hold {
    outer: bool,
}

/// Holds this thread's lines to [`Stderr`] until the returned [`Hold`] is dropped.
pub fn hold() -> Hold {
    let outer = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let outer = h.is_none();
        if outer {
            *h = Some(Vec::new());
        }
        outer
    });
    Hold { outer }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.outer {
            if let Some(lines) = HELD.with(|h| h.borrow_mut().take()) {
                write_out(&lines);
            }
        }
    }
}

/// Writes `lines` to standard error. A log line that cannot be written has nowhere to go
/// to be reported, so a failure is dropped (as `tracing`'s own writer does).
fn write_out(lines: &[u8]) {
    if !lines.is_empty() {
        let _ = io::stderr().lock().write_all(lines);
    }
}

/// What became of a line written to [`Stderr`].
enum Taken {
    /// Held, with the held lines when they grew to [`HELD_MAX`] (to be written now).
    Held(Option<Vec<u8>>),
    /// To be written now: this thread holds nothing.
    NotHeld,
}

/// Standard error, written to at once unless this thread holds its lines ([`hold`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let taken = HELD.with(|h| match h.borrow_mut().as_mut() {
            Some(held) => {
                held.extend_from_slice(buf);
                Taken::Held((held.len() >= HELD_MAX).then(|| std::mem::take(held)))
            }
            None => Taken::NotHeld,
        });
        match taken {
            Taken::Held(full) => {
                write_out(full.as_deref().unwrap_or_default());
                Ok(())
            }
            Taken::NotHeld => io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's held lines, if it holds them.
    fn held() -> Option<Vec<u8>> {
        HELD.with(|h| h.borrow().clone())
    }

    #[test]
    fn lines_are_held_until_the_outermost_hold_ends() {
        assert_eq!(held(), None);
        Stderr.write_all(b"not held\n").unwrap();
        assert_eq!(held(), None, "nothing is kept without a hold");
        let outer = hold();
        Stderr.write_all(b"a\n").unwrap();
        let inner = hold();
        Stderr.write_all(b"b\n").unwrap();
        drop(inner);
        assert_eq!(
            held().as_deref(),
            Some(&b"a\nb\n"[..]),
            "an inner hold joins"
        );
        drop(outer);
        assert_eq!(held(), None, "written once the outer hold ends");
        // Other threads are not held.
        let outer = hold();
        std::thread::spawn(|| {
            Stderr.write_all(b"elsewhere\n").unwrap();
            assert_eq!(held(), None);
        })
        .join()
        .unwrap();
        assert_eq!(held().as_deref(), Some(&b""[..]));
        drop(outer);
    }

    #[test]
    fn held_lines_are_written_once_they_reach_the_limit() {
        let _hold = hold();
        let line = [b'x'; 1000];
        let mut kept = 0;
        while kept + line.len() < HELD_MAX {
            Stderr.write_all(&line).unwrap();
            kept += line.len();
        }
        assert_eq!(held().map(|h| h.len()), Some(kept));
        Stderr.write_all(&line).unwrap();
        assert_eq!(held().map(|h| h.len()), Some(0), "written, still holding");
    }

    #[test]
    fn a_panic_while_holding_still_writes_the_lines() {
        let r = std::panic::catch_unwind(|| {
            let _hold = hold();
            Stderr.write_all(b"before the panic\n").unwrap();
            panic!("while holding");
        });
        assert!(r.is_err());
        assert_eq!(held(), None);
    }
}
