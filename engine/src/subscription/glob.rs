//! Subscription patterns (§6.2): globs over stream paths, by whole segments.
//!
//! A path is split on `/`. In a pattern, a segment that is exactly `*` matches one path
//! segment, a segment that is exactly `**` matches zero or more, and any other segment
//! matches itself only (a `*` inside a segment, as in `ev*`, is an ordinary character, as in
//! the reference server). Leading and trailing `/` are dropped before anything else. Patterns
//! and paths with empty segments (`a//b`), `.` or `..` segments, or more than
//! [`MAX_PATH_BYTES`] bytes or [`MAX_SEGMENTS`] segments are refused: they name no stream this
//! server would create, and their matching cost must stay bounded.

/// Longest pattern or stream path in a subscription, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most segments in a pattern or stream path.
pub const MAX_SEGMENTS: usize = 64;

/// Why a pattern or path was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Nothing left after dropping leading and trailing `/`.
    Empty,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
    /// More than [`MAX_SEGMENTS`] segments.
    TooManySegments,
    /// An empty, `.` or `..` segment.
    BadSegment,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::Empty => "is empty",
            PathError::TooLong => "is longer than 1024 bytes",
            PathError::TooManySegments => "has more than 64 segments",
            PathError::BadSegment => "has an empty, `.` or `..` segment",
        })
    }
}

/// A stream path as subscriptions name it: leading and trailing `/` dropped, then checked.
///
/// # Errors
/// As [`PathError`] says.
pub fn normalize(path: &str) -> Result<&str, PathError> {
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let mut count = 0;
    for segment in path.split('/') {
        count += 1;
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(PathError::BadSegment);
        }
    }
    if count > MAX_SEGMENTS {
        return Err(PathError::TooManySegments);
    }
    Ok(path)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    Any,
}

/// A parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segments: Box<[Segment]>,
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// As [`normalize`].
    pub fn parse(pattern: &str) -> Result<Pattern, PathError> {
        let text = normalize(pattern)?;
        let segments = text
            .split('/')
            .map(|s| match s {
                "*" => Segment::One,
                "**" => Segment::Any,
                other => Segment::Literal(other.into()),
            })
            .collect();
        Ok(Pattern { text: text.into(), segments })
    }

    /// The normalized pattern.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal segments before the first wildcard, each followed by `/`: every matching
    /// path, followed by `/`, starts with it, so a listing of candidates can be a prefix
    /// range scan.
    #[must_use]
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for segment in self.segments.iter() {
            match segment {
                Segment::Literal(s) => {
                    out.push_str(s);
                    out.push('/');
                }
                Segment::One | Segment::Any => break,
            }
        }
        out
    }

    /// What the names of matching streams start with: [`Pattern::literal_prefix`] without its
    /// final `/` (`a/**` matches `a` itself, and a pattern without wildcards exactly its own
    /// name).
    #[must_use]
    pub fn name_prefix(&self) -> String {
        let mut prefix = self.literal_prefix();
        prefix.pop();
        prefix
    }

    /// Whether the stream at `path` (already normalized) matches.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let pattern = &self.segments;
        // Wildcard matching with one backtrack point, the last `**` seen: `**` first matches
        // nothing, and on a mismatch later it takes one more segment. Linear in practice,
        // O(pattern × path) at worst (both bounded by MAX_SEGMENTS).
        let (mut p, mut s) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while s < parts.len() {
            match pattern.get(p) {
                Some(Segment::Any) => {
                    star = Some((p, s));
                    p += 1;
                }
                Some(Segment::One) => {
                    p += 1;
                    s += 1;
                }
                Some(Segment::Literal(l)) if **l == *parts[s] => {
                    p += 1;
                    s += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        p = sp + 1;
                        s = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|seg| *seg == Segment::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn one_star_is_one_segment_and_two_stars_any_number() {
        assert!(matches("events/*", "events/a"));
        assert!(!matches("events/*", "events"));
        assert!(!matches("events/*", "events/a/b"));
        assert!(matches("events/**", "events"));
        assert!(matches("events/**", "events/a/b/c"));
        assert!(matches("**", "x"));
        assert!(matches("**/tail", "a/b/tail"));
        assert!(matches("**/tail", "tail"));
        assert!(!matches("**/tail", "a/tail/b"));
        assert!(matches("a/**/b/*", "a/x/b/y/b/z"));
        assert!(matches("a/*/c", "a/b/c"));
        assert!(!matches("a/*/c", "a/b/d"));
    }

    #[test]
    fn a_star_inside_a_segment_is_an_ordinary_character() {
        assert!(matches("ev*", "ev*"));
        assert!(!matches("ev*", "events"));
        assert!(!matches("events/a*", "events/ab"));
    }

    #[test]
    fn slashes_at_the_ends_are_dropped_and_bad_segments_refused() {
        assert_eq!(Pattern::parse("/events/*/").unwrap().as_str(), "events/*");
        assert_eq!(normalize("//a/b//"), Ok("a/b"));
        for (bad, why) in [
            ("", PathError::Empty),
            ("///", PathError::Empty),
            ("a//b", PathError::BadSegment),
            ("a/./b", PathError::BadSegment),
            ("../a", PathError::BadSegment),
        ] {
            assert_eq!(Pattern::parse(bad).unwrap_err(), why, "{bad:?}");
            assert_eq!(normalize(bad).unwrap_err(), why, "{bad:?}");
        }
        assert_eq!(normalize(&"a".repeat(1025)), Err(PathError::TooLong));
        assert_eq!(normalize(&vec!["a"; 65].join("/")), Err(PathError::TooManySegments));
        assert!(normalize(&vec!["a"; 64].join("/")).is_ok());
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(Pattern::parse("events/*").unwrap().literal_prefix(), "events/");
        assert_eq!(Pattern::parse("a/b/**/c").unwrap().literal_prefix(), "a/b/");
        assert_eq!(Pattern::parse("**").unwrap().literal_prefix(), "");
    }

    /// The obvious recursive definition, exponential but fine for short inputs.
    fn reference(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                reference(&pattern[1..], path)
                    || (!path.is_empty() && reference(pattern, &path[1..]))
            }
            (Some(&"*"), Some(_)) => reference(&pattern[1..], &path[1..]),
            (Some(l), Some(s)) => l == s && reference(&pattern[1..], &path[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn matches_the_recursive_definition(
            pattern in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 1..7),
            path in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..7),
        ) {
            let p = Pattern::parse(&pattern.join("/")).unwrap();
            let prefix = p.literal_prefix();
            let joined = path.join("/");
            let m = p.matches(&joined);
            prop_assert_eq!(m, reference(&pattern, &path));
            if m {
                let with_slash = format!("{joined}/");
                prop_assert!(with_slash.starts_with(&prefix), "{} does not start with {}", with_slash, prefix);
                prop_assert!(joined.starts_with(&p.name_prefix()), "{} vs {}", joined, p.name_prefix());
            }
        }
    }
}
