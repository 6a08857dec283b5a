//! Offsets: the only module that knows how a stream position becomes an opaque token (§8).
//!
//! A token is two fixed-width lower-case hex fields joined by `_`:
//!
//! ```text
//! pppppppppppppppp_ssssssssssssssss
//! |                |
//! |                +-- 16 hex digits: `sub`, a position inside a stored record
//! +------------------- 16 hex digits: `pos`, the position in the stream's offset space
//! ```
//!
//! 33 characters, the shape the official server family uses, so that the one offset clients
//! construct themselves (the conformance suite forks at `0000000000000000_0000000000000000`,
//! the beginning of a stream) parses as what it means. `sub` is held as a `u32`: a token whose
//! `sub` does not fit is not one this server minted, and is malformed.
//!
//! Because both fields have a fixed width, comparing tokens as strings orders them exactly as
//! comparing `(pos, sub)` as numbers, which is what §8 asks of clients that sort offsets.
//! A token never equals the sentinels `-1` or `now`, and uses no character that needs
//! escaping in a query string.
//!
//! Every store defines `pos` in its own terms (the memory store counts stored bytes); forks
//! share the offset space of their source, so a fork's own data starts at its fork position.
//! `sub` is reserved for addressing inside a record (a fork sub-offset in a framed log).

use std::fmt;

/// Width of the `pos` field in hex digits.
const POS_DIGITS: usize = 16;
/// Width of the `sub` field in hex digits.
const SUB_DIGITS: usize = 16;
/// Length of a rendered token: `pos`, `_`, `sub`.
pub const TOKEN_LEN: usize = POS_DIGITS + 1 + SUB_DIGITS;

/// A position in a stream's offset space. Ordered as `(pos, sub)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    pos: u64,
    sub: u32,
}

impl Offset {
    /// The beginning of every stream.
    pub const ZERO: Offset = Offset { pos: 0, sub: 0 };

    /// An offset at a record boundary.
    #[must_use]
    pub const fn at(pos: u64) -> Offset {
        Offset { pos, sub: 0 }
    }

    /// A position inside the record that starts at `pos`: `sub` bytes into it, or for a JSON
    /// stream's record `sub` messages into it.
    #[must_use]
    pub const fn with_sub(pos: u64, sub: u32) -> Offset {
        Offset { pos, sub }
    }

    /// The position field.
    #[must_use]
    pub const fn pos(self) -> u64 {
        self.pos
    }

    /// The sub-record field.
    #[must_use]
    pub const fn sub(self) -> u32 {
        self.sub
    }

    /// Parses a token minted by [`Offset`]'s `Display`. Returns `None` for anything else,
    /// including the sentinels `-1` and `now`, which callers handle before this.
    #[must_use]
    pub fn parse(token: &str) -> Option<Offset> {
        let bytes = token.as_bytes();
        if bytes.len() != TOKEN_LEN || bytes.get(POS_DIGITS) != Some(&b'_') {
            return None;
        }
        let pos = parse_hex(bytes.get(..POS_DIGITS)?)?;
        let sub = u32::try_from(parse_hex(bytes.get(POS_DIGITS + 1..)?)?).ok()?;
        Some(Offset { pos, sub })
    }

    /// Writes the token into a fixed-size buffer, without allocating.
    #[must_use]
    pub fn encode(self) -> [u8; TOKEN_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'0'; TOKEN_LEN];
        let mut pos = self.pos;
        for slot in out[..POS_DIGITS].iter_mut().rev() {
            *slot = HEX[(pos & 0xf) as usize];
            pos >>= 4;
        }
        out[POS_DIGITS] = b'_';
        let mut sub = self.sub;
        for slot in out[POS_DIGITS + 1..].iter_mut().rev() {
            *slot = HEX[(sub & 0xf) as usize];
            sub >>= 4;
        }
        out
    }
}

/// Lower-case hex only: an upper-case token would sort differently from the one we minted.
fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(nibble);
    }
    Some(value)
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.encode();
        // The encoder only writes ASCII hex digits and `_`.
        f.write_str(std::str::from_utf8(&token).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({self})")
    }
}

/// Where a read starts, as a client may name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `-1` or no offset: the beginning of the stream.
    Start,
    /// `now`: the current tail.
    Tail,
    /// A token the server minted earlier.
    At(Offset),
}

impl ReadFrom {
    /// Parses a client's `offset` value. `None` means the value is malformed.
    #[must_use]
    pub fn parse(value: &str) -> Option<ReadFrom> {
        match value {
            "-1" => Some(ReadFrom::Start),
            "now" => Some(ReadFrom::Tail),
            token => Offset::parse(token).map(ReadFrom::At),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_renders_fixed_width() {
        assert_eq!(Offset::ZERO.to_string(), "0000000000000000_0000000000000000");
        assert_eq!(Offset::ZERO.to_string().len(), TOKEN_LEN);
    }

    #[test]
    fn sentinels_and_garbage_are_not_tokens() {
        for bad in [
            "",
            "-1",
            "now",
            "0",
            "abc",
            "0000000000000000_00000000",
            "0000000000000000_000000000000000",
            "0000000000000000-0000000000000000",
            "000000000000000G_0000000000000000",
            "000000000000000A_0000000000000000",
            "0000000000000000_000000000000000000",
            " 000000000000000_0000000000000000",
            "0000000000000000_000000000000000,",
            "+000000000000000_0000000000000000",
            // A sub-position no token of ours carries.
            "0000000000000000_0000000100000000",
            "9999999999999999_9999999999999999",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn read_from_accepts_sentinels() {
        assert_eq!(ReadFrom::parse("-1"), Some(ReadFrom::Start));
        assert_eq!(ReadFrom::parse("now"), Some(ReadFrom::Tail));
        assert_eq!(ReadFrom::parse("NOW"), None);
        assert_eq!(ReadFrom::parse("-2"), None);
    }

    proptest! {
        #[test]
        fn roundtrip(pos: u64, sub: u32) {
            let o = Offset { pos, sub };
            let token = o.to_string();
            prop_assert_eq!(token.len(), TOKEN_LEN);
            prop_assert_eq!(Offset::parse(&token), Some(o));
            prop_assert!(token != "-1" && token != "now");
            prop_assert!(!token.contains([',', '&', '=', '?', '/']));
        }

        #[test]
        fn string_order_is_numeric_order(a: (u64, u32), b: (u64, u32)) {
            let (x, y) = (Offset { pos: a.0, sub: a.1 }, Offset { pos: b.0, sub: b.1 });
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
