//! rpm's version comparison (`rpmvercmp`), the rule Anaconda applies to a Driver Update
//! Disk's `Provides: kernel-modules <op> <version>` against the running `uname -r`.
//!
//! The algorithm, as rpm documents and implements it:
//! - equal strings are equal;
//! - both strings are cut into segments: runs of ASCII digits or runs of ASCII letters;
//!   every other character only separates segments (except `~` and `^`);
//! - `~` sorts before anything, even the end of the string (`1.0~rc1 < 1.0`);
//! - `^` sorts after the end of the string but before any further segment
//!   (`1.0 < 1.0^git1 < 1.0.1`);
//! - a numeric segment is newer than an alphabetic one; numeric segments compare as
//!   numbers (leading zeros ignored, any length), alphabetic ones bytewise;
//! - when all compared segments are equal, the string with segments left over is newer.
//!
//! Pure and total: any pair of strings compares, nothing panics.

use std::cmp::Ordering;

/// Compare two version strings the way rpm does.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    loop {
        one = skip_separators(one);
        two = skip_separators(two);

        // `~` loses against everything, the end of the string included.
        let (t1, t2) = (one.first() == Some(&b'~'), two.first() == Some(&b'~'));
        if t1 || t2 {
            if !t1 {
                return Ordering::Greater;
            }
            if !t2 {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }

        // `^` wins against the end of the string, loses against any other segment.
        let (c1, c2) = (one.first() == Some(&b'^'), two.first() == Some(&b'^'));
        if c1 || c2 {
            if one.is_empty() {
                return Ordering::Less;
            }
            if two.is_empty() {
                return Ordering::Greater;
            }
            if !c1 {
                return Ordering::Greater;
            }
            if !c2 {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }

        if one.is_empty() || two.is_empty() {
            break;
        }

        // The first string decides what kind of segment is compared.
        let numeric = one[0].is_ascii_digit();
        let kind = |c: &u8| if numeric { c.is_ascii_digit() } else { c.is_ascii_alphabetic() };
        let len1 = one.iter().take_while(|c| kind(c)).count();
        let len2 = two.iter().take_while(|c| kind(c)).count();
        let (seg1, seg2) = (&one[..len1], &two[..len2]);
        one = &one[len1..];
        two = &two[len2..];

        if seg2.is_empty() {
            // Different kinds of segment: the numeric one is newer.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }

        let order = if numeric {
            let s1 = strip_zeros(seg1);
            let s2 = strip_zeros(seg2);
            s1.len().cmp(&s2.len()).then_with(|| s1.cmp(s2))
        } else {
            seg1.cmp(seg2)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn skip_separators(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^').count();
    &s[n..]
}

fn strip_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn documented_cases() {
        let table = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("1.0", "1", Greater),
            ("2.50", "2.5", Greater),
            ("fc4", "fc.4", Equal),
            ("FC5", "fc4", Less),
            ("2a", "2.0", Less),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("5.14.0-362.8.1.el9_3.x86_64", "5.14.0-362.8.1.el9_3.x86_64.x86_64", Less),
            ("5.14.0-362.8.1.el9_3.x86_64", "5.14.0-284.11.1.el9_2.x86_64", Greater),
        ];
        for (a, b, want) in table {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
