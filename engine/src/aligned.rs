//! `AlignedWrites`: a file's content written in pieces whose ends fall on aligned offsets.
//!
//! A write that starts or ends in the middle of a large page-cache block forces the file
//! system to use small ones: ext4 with large folios writes a 1 GiB copy in 128 KiB pieces
//! at arbitrary (chunk) offsets at about half the speed of the same pieces on 64 KiB
//! boundaries (measured on this project's VM: 0.36–0.46 against 0.22–0.24 CPU-s, two
//! writers into a preallocated file). Writing bigger pieces helps too, but then the bytes no longer stay
//! in the CPU cache between reading, verifying and writing them. So pieces stay the size
//! they are read in, and the few bytes past the last boundary are held back and written
//! with the next piece when it follows on.

use crate::error::Result;
use crate::target::TempFile;

/// Where the pieces go: a temp file, or a recorder in tests.
pub trait PartsWriter {
    /// Writes `parts` back to back from `offset`.
    fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()>;
}

impl PartsWriter for TempFile {
    fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        TempFile::write_parts_at(self, offset, parts)
    }
}

/// The boundary writes are cut at.
pub const ALIGN: u64 = 64 << 10;

/// Writes to one temp file, holding back the unaligned end of each contiguous stretch
/// until the next piece shows whether it continues. [`AlignedWrites::finish`] writes what
/// is held back; a piece that does not follow on writes it first.
pub struct AlignedWrites<'a, W: PartsWriter + ?Sized = TempFile> {
    out: &'a W,
    /// Bytes held back, and the file offset they start at.
    held: Vec<u8>,
    held_at: u64,
}

impl<'a, W: PartsWriter + ?Sized> AlignedWrites<'a, W> {
    /// Nothing written or held yet.
    pub fn new(out: &'a W) -> Self {
        AlignedWrites {
            out,
            held: Vec::new(),
            held_at: 0,
        }
    }

    /// Writes `bytes` at `offset`, up to the last [`ALIGN`] boundary they reach, and holds
    /// back the rest.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.held.is_empty() && self.held_at + self.held.len() as u64 != offset {
            self.finish()?;
        }
        if self.held.is_empty() {
            self.held_at = offset;
        }
        let end = offset + bytes.len() as u64;
        let cut = end / ALIGN * ALIGN;
        if cut <= self.held_at {
            // Start and end in one aligned block: nothing to write yet.
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        // What is held never reaches a boundary (it is what lay past the last one), so
        // the boundary lies in `bytes`: all that is held goes out with their head.
        debug_assert!(cut > offset);
        let head = (cut - offset) as usize;
        self.out
            .write_parts_at(self.held_at, &[&self.held, &bytes[..head]])?;
        self.held.clear();
        self.held.extend_from_slice(&bytes[head..]);
        self.held_at = cut;
        Ok(())
    }

    /// Writes whatever is held back.
    pub fn finish(&mut self) -> Result<()> {
        if !self.held.is_empty() {
            self.out.write_parts_at(self.held_at, &[&self.held])?;
            self.held.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use proptest::prelude::*;

    use super::*;

    /// Records every write: (offset, length), and the file as it would be.
    #[derive(Default)]
    struct Recorder {
        writes: RefCell<Vec<(u64, u64)>>,
        file: RefCell<Vec<u8>>,
    }

    impl PartsWriter for Recorder {
        fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
            let bytes = parts.concat();
            self.writes.borrow_mut().push((offset, bytes.len() as u64));
            let mut file = self.file.borrow_mut();
            let end = offset as usize + bytes.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[offset as usize..end].copy_from_slice(&bytes);
            Ok(())
        }
    }

    /// Pieces of a file: (gap before it, length); a gap breaks the stretch.
    fn pieces() -> impl Strategy<Value = Vec<(u64, usize)>> {
        prop::collection::vec(
            (
                prop_oneof![4 => Just(0u64), 1 => 1u64..100_000],
                1usize..300_000,
            ),
            1..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the pieces, the file ends as written piece by piece, and every write
        /// starts on a boundary unless a stretch starts there, and ends on one unless a
        /// stretch ends there.
        #[test]
        fn pieces_land_whole_and_every_write_inside_a_stretch_is_aligned(layout in pieces()) {
            let out = Recorder::default();
            let mut expected = Vec::new();
            let mut starts = Vec::new();
            let mut ends = Vec::new();
            {
                let mut w = AlignedWrites::new(&out);
                let mut at = 0u64;
                for (i, (gap, len)) in layout.iter().enumerate() {
                    at += gap;
                    if i == 0 || *gap > 0 {
                        if i > 0 {
                            ends.push(at - gap);
                        }
                        starts.push(at);
                    }
                    let bytes: Vec<u8> = (0..*len).map(|k| (k as u64 + at) as u8 | 1).collect();
                    expected.resize(at as usize, 0);
                    expected.extend_from_slice(&bytes);
                    w.write(at, &bytes).unwrap();
                    at += *len as u64;
                }
                ends.push(at);
                w.finish().unwrap();
            }
            prop_assert_eq!(&*out.file.borrow(), &expected);
            for &(offset, len) in out.writes.borrow().iter() {
                prop_assert!(len > 0);
                prop_assert!(offset % ALIGN == 0 || starts.contains(&offset), "write at {offset}");
                let end = offset + len;
                prop_assert!(end % ALIGN == 0 || ends.contains(&end), "write ending at {end}");
            }
        }
    }

    #[test]
    fn a_piece_inside_one_block_is_held_until_finish() {
        let out = Recorder::default();
        let mut w = AlignedWrites::new(&out);
        w.write(10, b"abc").unwrap();
        w.write(13, b"def").unwrap();
        assert!(out.writes.borrow().is_empty());
        w.finish().unwrap();
        assert_eq!(*out.writes.borrow(), vec![(10, 6)]);
    }

    #[test]
    fn a_piece_crossing_a_boundary_writes_up_to_it_with_what_was_held() {
        let out = Recorder::default();
        let mut w = AlignedWrites::new(&out);
        w.write(ALIGN - 5, &[1; 3]).unwrap();
        w.write(ALIGN - 2, &[2; 10]).unwrap();
        assert_eq!(*out.writes.borrow(), vec![(ALIGN - 5, 5)]);
        w.write(ALIGN + 8, &[3; ALIGN as usize]).unwrap();
        assert_eq!(out.writes.borrow()[1], (ALIGN, ALIGN));
        w.finish().unwrap();
        assert_eq!(out.writes.borrow()[2], (2 * ALIGN, 8));
    }
}
