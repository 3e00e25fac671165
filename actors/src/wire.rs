//! Message sizes as they would travel: the CBOR encoding every Sender ↔ Applier message is
//! counted by, in process as on the network.

use std::io;

use serde::Serialize;

/// A writer that only counts.
struct Counter(u64);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size of `msg` encoded as CBOR, in bytes.
pub fn encoded_len<T: Serialize>(msg: &T) -> u64 {
    let mut c = Counter(0);
    // Writing to a counter cannot fail, and every message type is plain data.
    match ciborium::into_writer(msg, &mut c) {
        Ok(()) => c.0,
        Err(e) => {
            tracing::error!("cannot encode a message to measure it: {e}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_fields_cost_their_length_plus_a_small_header() {
        let payload = serde_bytes::ByteBuf::from(vec![7u8; 10_000]);
        let n = encoded_len(&payload);
        assert!((10_000..10_010).contains(&n), "{n}");
    }
}
