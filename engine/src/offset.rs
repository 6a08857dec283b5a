//! Offsets: the only module that knows how a stream position becomes an opaque token (§8).
//!
//! A token is three fixed-width lower-case hex fields:
//!
//! ```text
//! pppppppppppppppp_sssssssstttttttt
//! |                |       |
//! |                |       +-- 8 hex digits: `tag`, which incarnation of the name minted it
//! |                +---------- 8 hex digits: `sub`, a position inside a stored record
//! +--------------------------- 16 hex digits: `pos`, the position in the stream's offset space
//! ```
//!
//! 33 characters, the shape the official server family uses, so that the one offset clients
//! construct themselves (the conformance suite forks at `0000000000000000_0000000000000000`,
//! the beginning of a stream) parses as what it means.
//!
//! Because `pos` and `sub` come first with a fixed width, comparing tokens as strings orders
//! them exactly as comparing `(pos, sub)` as numbers, which is what §8 asks of clients that
//! sort offsets. A token never equals the sentinels `-1` or `now`, and uses no character that
//! needs escaping in a query string.
//!
//! Every store defines `pos` in its own terms (the memory store counts stored bytes); forks
//! share the offset space of their source, so a fork's own data starts at its fork position.
//! `sub` is reserved for addressing inside a record (a fork sub-offset in a framed log).
//!
//! # Tags: offsets of a deleted stream are refused
//!
//! A name may be deleted and created again, and the new stream's positions start at 0 like
//! the old one's: without more, a reader resuming from a saved offset would silently read
//! the new stream from its middle. So every token also carries a `tag`: 32 bits of the
//! incarnation that wrote the data before the position ([`tag_of`]). A token whose tag names
//! another incarnation than the one that owns its position is refused with
//! [`crate::Error::OffsetGone`] (410). The tag is a check, not part of the position:
//! equality, order and hashing of [`Offset`] ignore it.
//!
//! Which incarnation owns a position is what keeps fork offsets identical to their
//! source's (§8: "no offset translation"): a position inside or at the end of a fork's
//! inherited range carries the tag of the source (or deeper ancestor) that wrote it; only
//! positions after the fork point carry the fork's own tag ([`Lineage`]). The beginning,
//! position 0, carries tag 0, so the token clients construct stays valid everywhere.
//!
//! Tag 0 is also what every token minted before tags existed carries: such a token is not
//! checked. (A token minted then with a non-zero `sub`, which only reads cut inside one
//! large record produce, now parses as that `sub` read as a tag, and is refused.)

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Width of the `pos` field in hex digits.
const POS_DIGITS: usize = 16;
/// Width of the `sub` field in hex digits.
const SUB_DIGITS: usize = 8;
/// Width of the `tag` field in hex digits.
const TAG_DIGITS: usize = 8;
/// Length of a rendered token: `pos`, `_`, `sub`, `tag`.
pub const TOKEN_LEN: usize = POS_DIGITS + 1 + SUB_DIGITS + TAG_DIGITS;

/// A position in a stream's offset space, ordered as `(pos, sub)`, with the tag of the
/// incarnation that minted it (ignored by `==`, `<` and hashing).
#[derive(Clone, Copy, Default)]
pub struct Offset {
    pos: u64,
    sub: u32,
    tag: u32,
}

impl PartialEq for Offset {
    fn eq(&self, other: &Offset) -> bool {
        (self.pos, self.sub) == (other.pos, other.sub)
    }
}

impl Eq for Offset {}

impl PartialOrd for Offset {
    fn partial_cmp(&self, other: &Offset) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Offset {
    fn cmp(&self, other: &Offset) -> Ordering {
        (self.pos, self.sub).cmp(&(other.pos, other.sub))
    }
}

impl Hash for Offset {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.pos, self.sub).hash(state);
    }
}

impl Offset {
    /// The beginning of every stream.
    pub const ZERO: Offset = Offset { pos: 0, sub: 0, tag: 0 };

    /// An offset at a record boundary.
    #[must_use]
    pub const fn at(pos: u64) -> Offset {
        Offset { pos, sub: 0, tag: 0 }
    }

    /// A position inside the record that starts at `pos`: `sub` bytes into it, or for a JSON
    /// stream's record `sub` messages into it.
    #[must_use]
    pub const fn with_sub(pos: u64, sub: u32) -> Offset {
        Offset { pos, sub, tag: 0 }
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

    /// The tag of the incarnation that minted it (0: none, or the beginning).
    #[must_use]
    pub const fn tag(self) -> u32 {
        self.tag
    }

    /// The same position with `tag`.
    #[must_use]
    pub const fn with_tag(self, tag: u32) -> Offset {
        Offset { tag, ..self }
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
        let rest = bytes.get(POS_DIGITS + 1..)?;
        let sub = u32::try_from(parse_hex(rest.get(..SUB_DIGITS)?)?).ok()?;
        let tag = u32::try_from(parse_hex(rest.get(SUB_DIGITS..)?)?).ok()?;
        Some(Offset { pos, sub, tag })
    }

    /// Writes the token into a fixed-size buffer, without allocating.
    #[must_use]
    pub fn encode(self) -> [u8; TOKEN_LEN] {
        let mut out = [b'0'; TOKEN_LEN];
        write_hex(&mut out[..POS_DIGITS], self.pos);
        out[POS_DIGITS] = b'_';
        let (sub, tag) = out[POS_DIGITS + 1..].split_at_mut(SUB_DIGITS);
        write_hex(sub, u64::from(self.sub));
        write_hex(tag, u64::from(self.tag));
        out
    }
}

/// Writes `value` as lower-case hex into all of `out`, right-aligned.
fn write_hex(out: &mut [u8], mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(value & 0xf) as usize];
        value >>= 4;
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

/// The tag of an incarnation: its two 32-bit halves folded together, never 0. Incarnations
/// one process creates are consecutive numbers, so two incarnations of a name created less
/// than 2^32 creations apart always have different tags; across restarts (where the
/// counter jumps to the clock) two tags collide with probability 2^-32.
#[must_use]
pub const fn tag_of(incarnation: u64) -> u32 {
    let t = (incarnation as u32) ^ ((incarnation >> 32) as u32);
    if t == 0 { 0x8000_0000 } else { t }
}

/// What a stream needs to stamp and check the tags of its own offsets: its own tag, and
/// for a fork, its fork point and the tag its source gives that point (0 if unknown: a
/// fork created before tags existed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    own: u32,
    fork: Option<(u64, u32)>,
}

/// What [`Lineage::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagCheck {
    /// Minted by this stream (or carries no tag).
    Valid,
    /// Minted by another incarnation.
    Foreign,
    /// A position of the inherited range: the source that owns it must check it.
    Inherited,
}

impl Lineage {
    /// The lineage of incarnation `incarnation`, forked at `fork` = (fork point, the
    /// source's tag of it) if it is a fork.
    #[must_use]
    pub const fn new(incarnation: u64, fork: Option<(u64, u32)>) -> Lineage {
        Lineage { own: tag_of(incarnation), fork }
    }

    /// The token of a record boundary at `pos` of this stream's own range (or its fork
    /// point).
    #[must_use]
    pub fn at(self, pos: u64) -> Offset {
        self.stamp(Offset::at(pos))
    }

    /// `off` with the tag this stream gives it. Position 0 carries tag 0; the fork point,
    /// its source's tag. A position strictly inside the inherited range is left untagged:
    /// the source that owns it stamps it (see the engine's fork stitching).
    #[must_use]
    pub fn stamp(self, off: Offset) -> Offset {
        if off.pos == 0 && off.sub == 0 {
            return off.with_tag(0);
        }
        match self.fork {
            Some((at, at_tag)) if off.pos == at && off.sub == 0 => off.with_tag(at_tag),
            Some((at, _)) if off.pos < at => off.with_tag(0),
            _ => off.with_tag(self.own),
        }
    }

    /// Whether this stream minted `off`.
    #[must_use]
    pub fn check(self, off: Offset) -> TagCheck {
        if off.tag == 0 {
            return TagCheck::Valid;
        }
        if off.pos == 0 && off.sub == 0 {
            return TagCheck::Foreign;
        }
        let expected = match self.fork {
            Some((at, 0)) if off.pos == at && off.sub == 0 => return TagCheck::Inherited,
            Some((at, at_tag)) if off.pos == at && off.sub == 0 => at_tag,
            Some((at, _)) if off.pos < at => return TagCheck::Inherited,
            _ => self.own,
        };
        if off.tag == expected { TagCheck::Valid } else { TagCheck::Foreign }
    }
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
            "0000000000000000_0000000-00000000",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn tags_never_zero_and_differ_between_consecutive_incarnations() {
        for inc in [0, 1, 1 << 32, (1 << 32) + 1, u64::MAX - 1, 1_790_000_000_000 * 1024] {
            assert_ne!(tag_of(inc), 0, "{inc}");
            assert_ne!(tag_of(inc), tag_of(inc.wrapping_add(1)), "{inc}");
        }
    }

    /// A token minted before tags existed (tag 0) is never refused.
    #[test]
    fn untagged_tokens_are_not_checked() {
        let plain = Lineage::new(7, None);
        assert_eq!(plain.check(Offset::at(12)), TagCheck::Valid);
        assert_eq!(plain.check(plain.at(12)), TagCheck::Valid);
        assert_eq!(plain.check(Lineage::new(8, None).at(12)), TagCheck::Foreign);
        assert_eq!(plain.at(0).tag(), 0, "the beginning is the same token everywhere");
        assert_eq!(plain.check(Offset::ZERO.with_tag(5)), TagCheck::Foreign);
    }

    /// A fork's inherited positions carry its source's tags; its own, its own.
    #[test]
    fn forks_stamp_the_fork_point_with_the_source_tag() {
        let source = Lineage::new(3, None);
        let fork = Lineage::new(9, Some((100, source.at(100).tag())));
        assert_eq!(fork.at(100).to_string(), source.at(100).to_string());
        assert_eq!(fork.check(source.at(100)), TagCheck::Valid);
        assert_eq!(fork.check(source.at(50)), TagCheck::Inherited);
        assert_eq!(fork.at(101).tag(), tag_of(9));
        assert_eq!(fork.check(Offset::with_sub(100, 2).with_tag(tag_of(9))), TagCheck::Valid);
        assert_eq!(fork.check(source.at(101)), TagCheck::Foreign);
        let legacy = Lineage::new(9, Some((100, 0)));
        assert_eq!(legacy.check(source.at(100)), TagCheck::Inherited);
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
        fn roundtrip(pos: u64, sub: u32, tag: u32) {
            let o = Offset { pos, sub, tag };
            let token = o.to_string();
            prop_assert_eq!(token.len(), TOKEN_LEN);
            let parsed = Offset::parse(&token).unwrap();
            prop_assert_eq!((parsed, parsed.tag()), (o, tag));
            prop_assert!(token != "-1" && token != "now");
            prop_assert!(!token.contains([',', '&', '=', '?', '/']));
        }

        #[test]
        fn string_order_is_numeric_order(a: (u64, u32, u32), b: (u64, u32, u32)) {
            let x = Offset { pos: a.0, sub: a.1, tag: a.2 };
            let y = Offset { pos: b.0, sub: b.1, tag: b.2 };
            // Different positions sort as their tokens do, whatever their tags.
            if x != y {
                prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            }
        }
    }
}
