//! [`NodeId`]: who a node is (the BLAKE3 hash of its certificate), and the typo-detecting
//! text form people copy between machines.
//!
//! The text form is the 32 bytes in base32 (RFC 4648 alphabet, no padding, 52 characters)
//! followed by a 4-character check, written as 8 groups of 7 separated by `-`:
//!
//! ```text
//! NX2I6GE-BSGUQMU-ZJ3MLQL-PY6GDDV-U7UMNCW-ZZ6H45G-65UMC7U-SXQJMEN
//! ```
//!
//! Parsing ignores case, dashes and white space, and rejects a mistyped character: the
//! check is 20 bits of a hash of the bytes, so a typo slips through about once in a
//! million tries.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The RFC 4648 base32 alphabet.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 characters holding the 32 bytes (256 bits, the last character carries 1 bit).
const DATA_CHARS: usize = 52;

/// Base32 characters of the check (20 bits).
const CHECK_CHARS: usize = 4;

/// Characters in the text form, not counting the dashes.
const TEXT_CHARS: usize = DATA_CHARS + CHECK_CHARS;

/// The text form is written in groups of this many characters.
const GROUP: usize = 7;

/// Domain separation for the check, so it is not simply a prefix of some other hash.
const CHECK_CONTEXT: &[u8] = b"ferry-node-id-check";

/// A node's identity: the BLAKE3 hash of its DER certificate.
///
/// `Display` and `FromStr` use the checked text form described in the [module docs](self);
/// serde uses that text form too.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The id of the node presenting the DER certificate `der`.
    pub fn of_certificate(der: &[u8]) -> NodeId {
        NodeId(*blake3::hash(der).as_bytes())
    }

    /// An id from its raw bytes (as returned by [`NodeId::as_bytes`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 20-bit check of the text form, as 4 base32 digit values.
    fn check(&self) -> [u8; CHECK_CHARS] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(CHECK_CONTEXT);
        hasher.update(&self.0);
        let h = hasher.finalize();
        let h = h.as_bytes();
        let bits = (u32::from(h[0]) << 12) | (u32::from(h[1]) << 4) | (u32::from(h[2]) >> 4);
        [
            ((bits >> 15) & 31) as u8,
            ((bits >> 10) & 31) as u8,
            ((bits >> 5) & 31) as u8,
            (bits & 31) as u8,
        ]
    }

    /// The 56 base32 characters of the text form, without dashes.
    fn chars(&self) -> [u8; TEXT_CHARS] {
        let mut out = [0u8; TEXT_CHARS];
        let mut n = 0;
        let mut acc: u16 = 0;
        let mut bits = 0;
        for &byte in &self.0 {
            acc = (acc << 8) | u16::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out[n] = ALPHABET[usize::from((acc >> bits) & 31)];
                n += 1;
            }
            acc &= (1 << bits) - 1;
        }
        // 256 bits leave 1 bit over, padded with zeros to a last digit.
        out[n] = ALPHABET[usize::from((acc << (5 - bits)) & 31)];
        n += 1;
        debug_assert_eq!(n, DATA_CHARS);
        for digit in self.check() {
            out[n] = ALPHABET[usize::from(digit)];
            n += 1;
        }
        out
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.chars().chunks(GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for &c in group {
                fmt::Write::write_char(f, char::from(c))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a text is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Not 56 characters once dashes and white space are removed.
    #[error("a node id has 56 characters (8 groups of 7), got {got}")]
    Length {
        /// How many characters there were.
        got: usize,
    },
    /// A character outside `A-Z`, `2-7`, `-` and white space.
    #[error("invalid character {found:?} at position {position} of the node id{hint}")]
    InvalidChar {
        /// The offending character.
        found: char,
        /// Its position in the text, counting characters from 1.
        position: usize,
        /// A suggestion for the usual confusions (`0` for `O`, ...), or empty.
        hint: &'static str,
    },
    /// The check characters do not match: some character is mistyped.
    #[error("node id check failed: a character is mistyped")]
    Check,
}

/// The value of a base32 digit, either case.
fn digit_value(c: char) -> Option<u8> {
    match c {
        'A'..='Z' => Some(c as u8 - b'A'),
        'a'..='z' => Some(c as u8 - b'a'),
        '2'..='7' => Some(c as u8 - b'2' + 26),
        _ => None,
    }
}

/// What someone typing `c` probably meant, for the error message.
fn confusion_hint(c: char) -> &'static str {
    match c {
        '0' => " (node ids use letters A-Z and digits 2-7: did you mean 'O'?)",
        '1' => " (node ids use letters A-Z and digits 2-7: did you mean 'I' or 'L'?)",
        '8' => " (node ids use letters A-Z and digits 2-7: did you mean 'B'?)",
        '9' => " (node ids use letters A-Z and digits 2-7: did you mean 'G'?)",
        _ => " (node ids use letters A-Z and digits 2-7)",
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut digits = Vec::with_capacity(TEXT_CHARS);
        for (i, c) in s.chars().enumerate() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            match digit_value(c) {
                Some(d) => digits.push(d),
                None => {
                    return Err(NodeIdError::InvalidChar {
                        found: c,
                        position: i + 1,
                        hint: confusion_hint(c),
                    })
                }
            }
        }
        if digits.len() != TEXT_CHARS {
            return Err(NodeIdError::Length { got: digits.len() });
        }

        let mut bytes = [0u8; 32];
        let mut n = 0;
        let mut acc: u16 = 0;
        let mut bits = 0;
        for &d in &digits[..DATA_CHARS] {
            acc = (acc << 5) | u16::from(d);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes[n] = (acc >> bits) as u8;
                n += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // The padding bits of the last data digit must be zero: otherwise two texts
        // would name the same id, and a typo there would go unnoticed.
        if acc != 0 {
            return Err(NodeIdError::Check);
        }
        let id = NodeId(bytes);
        if id.check()[..] != digits[DATA_CHARS..] {
            return Err(NodeIdError::Check);
        }
        Ok(id)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeIdVisitor;

        impl Visitor<'_> for NodeIdVisitor {
            type Value = NodeId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id (8 groups of 7 base32 characters)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeId, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(NodeIdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: &[u8]) -> NodeId {
        NodeId::of_certificate(seed)
    }

    #[test]
    fn display_is_eight_groups_of_seven() {
        let text = sample(b"a certificate").to_string();
        assert_eq!(text.len(), 63);
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 8);
        for g in groups {
            assert_eq!(g.len(), 7);
            assert!(g.bytes().all(|b| ALPHABET.contains(&b)), "{g}");
        }
    }

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 test vector "foobar" -> "MZXW6YTBOI", extended to 32 bytes of zeros.
        let mut bytes = [0u8; 32];
        bytes[..6].copy_from_slice(b"foobar");
        let chars = NodeId(bytes).chars();
        assert_eq!(&chars[..10], b"MZXW6YTBOI");
        assert!(chars[10..DATA_CHARS].iter().all(|&c| c == b'A'));
        let ones = NodeId([0xff; 32]).chars();
        assert!(ones[..51].iter().all(|&c| c == b'7'));
        // The last data digit holds one bit followed by four zero bits.
        assert_eq!(ones[51], b'Q');
    }

    #[test]
    fn round_trip() {
        for seed in 0u32..200 {
            let id = sample(&seed.to_le_bytes());
            let text = id.to_string();
            assert_eq!(text.parse::<NodeId>(), Ok(id));
        }
        for id in [NodeId([0; 32]), NodeId([0xff; 32])] {
            assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }
    }

    #[test]
    fn lower_case_dashes_and_spaces_are_optional() {
        let id = sample(b"x");
        let text = id.to_string();
        assert_eq!(text.to_lowercase().parse::<NodeId>(), Ok(id));
        assert_eq!(text.replace('-', "").parse::<NodeId>(), Ok(id));
        assert_eq!(text.replace('-', " ").parse::<NodeId>(), Ok(id));
        assert_eq!(format!("  {text}\n").parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn every_single_substitution_is_detected() {
        let id = sample(b"exhaustive");
        let chars = id.chars();
        for pos in 0..TEXT_CHARS {
            for &other in ALPHABET.iter().filter(|&&c| c != chars[pos]) {
                let mut typo = chars;
                typo[pos] = other;
                let text = String::from_utf8(typo.to_vec()).unwrap();
                assert_eq!(
                    text.parse::<NodeId>(),
                    Err(NodeIdError::Check),
                    "typo at {pos}: {text}"
                );
            }
        }
    }

    #[test]
    fn adjacent_swaps_are_detected() {
        let id = sample(b"swaps");
        let chars = id.chars();
        for pos in 0..TEXT_CHARS - 1 {
            if chars[pos] == chars[pos + 1] {
                continue;
            }
            let mut typo = chars;
            typo.swap(pos, pos + 1);
            let text = String::from_utf8(typo.to_vec()).unwrap();
            assert!(text.parse::<NodeId>().is_err(), "swap at {pos}: {text}");
        }
    }

    #[test]
    fn wrong_length_is_reported() {
        let text = sample(b"len").to_string();
        let short = &text[..text.len() - 1];
        assert_eq!(
            short.parse::<NodeId>(),
            Err(NodeIdError::Length { got: 55 })
        );
        let err = format!("{text}A").parse::<NodeId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "a node id has 56 characters (8 groups of 7), got 57"
        );
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::Length { got: 0 }));
    }

    #[test]
    fn invalid_character_is_named_with_its_position() {
        let mut text = sample(b"char").to_string();
        text.replace_range(8..9, "0");
        let err = text.parse::<NodeId>().unwrap_err();
        assert!(matches!(
            err,
            NodeIdError::InvalidChar {
                found: '0',
                position: 9,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("'0'") && msg.contains("position 9"), "{msg}");
        assert!(msg.contains("did you mean 'O'"), "{msg}");
    }

    #[test]
    fn check_failure_message() {
        assert_eq!(
            NodeIdError::Check.to_string(),
            "node id check failed: a character is mistyped"
        );
    }

    #[test]
    fn debug_shows_the_text_form() {
        let id = sample(b"debug");
        assert_eq!(format!("{id:?}"), format!("NodeId({id})"));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let id = sample(b"serde");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        let bad = serde_json::from_str::<NodeId>("\"AAAA\"").unwrap_err();
        assert!(bad.to_string().contains("56 characters"), "{bad}");

        let mut cbor = Vec::new();
        ciborium::into_writer(&id, &mut cbor).unwrap();
        assert_eq!(ciborium::from_reader::<NodeId, _>(&cbor[..]).unwrap(), id);
    }
}
