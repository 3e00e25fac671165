//! Free space on a file system: whether files held back for lack of space may fit now.

use std::io;
use std::os::fd::AsFd;

/// The room left on a file system, as a writer without the superuser's reserve sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes that may still be written.
    pub bytes: u64,
    /// The file system's block: every file takes whole ones.
    pub block: u64,
}

impl FreeSpace {
    /// The room left on the file system holding `dir`.
    pub fn of(dir: &impl AsFd) -> io::Result<FreeSpace> {
        let st = rustix::fs::fstatvfs(dir)?;
        let block = st.f_frsize.max(1);
        Ok(FreeSpace {
            bytes: st.f_bavail.saturating_mul(block),
            block,
        })
    }

    /// The bytes a file of `len` bytes takes, in whole blocks.
    fn taken_by(&self, len: u64) -> u64 {
        len.div_ceil(self.block).saturating_mul(self.block)
    }

    /// Takes the room for a file of `len` bytes; false (taking nothing) if it does not fit.
    pub fn take(&mut self, len: u64) -> bool {
        let need = self.taken_by(len);
        if need > self.bytes {
            return false;
        }
        self.bytes -= need;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_take_whole_blocks_until_the_room_runs_out() {
        let mut room = FreeSpace {
            bytes: 10 * 4096,
            block: 4096,
        };
        assert_eq!(room.taken_by(0), 0);
        assert_eq!(room.taken_by(1), 4096);
        assert_eq!(room.taken_by(4096), 4096);
        assert_eq!(room.taken_by(4097), 8192);
        assert!(room.take(3 * 4096 + 1));
        assert_eq!(room.bytes, 6 * 4096);
        assert!(!room.take(6 * 4096 + 1), "one byte too many does not fit");
        assert_eq!(
            room.bytes,
            6 * 4096,
            "a file that does not fit takes nothing"
        );
        assert!(room.take(6 * 4096));
        assert_eq!(room.bytes, 0);
        assert!(room.take(0), "an empty file takes no block");
    }

    #[test]
    fn the_room_of_a_real_directory_is_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(dir.path()).unwrap();
        let room = FreeSpace::of(&f).unwrap();
        assert!(room.block >= 512, "{room:?}");
        assert_eq!(room.bytes % room.block, 0, "{room:?}");
    }
}
