//! The `.modinfo` section: NUL-separated `key=value` strings.
//!
//! The order of entries carries no meaning to the kernel, but tools print values in
//! section order, so we keep it: [`ModInfo`] is an ordered multimap.

use serde::ser::SerializeSeq;

/// Ordered `key=value` pairs from `.modinfo`; a key may repeat (alias, firmware, parm).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    entries: Vec<(String, String)>,
}

impl ModInfo {
    /// Parse the raw section. Empty strings (alignment padding) are skipped; a string
    /// without `=` is kept as a key with an empty value, like kmod does. Invalid UTF-8
    /// is replaced rather than rejected: a broken description must not hide the vermagic.
    pub fn parse(section: &[u8]) -> ModInfo {
        let entries = section
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let text = String::from_utf8_lossy(s);
                match text.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (text.into_owned(), String::new()),
                }
            })
            .collect();
        ModInfo { entries }
    }

    /// Encode back to section bytes (used by the sample module builder).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Every value of `key`, in section order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first value of `key`.
    pub fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.values(key).next()
    }

    /// All entries in order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// `depends=` split into module names (empty list when absent or empty).
    pub fn depends(&self) -> Vec<String> {
        self.get("depends")
            .map(|d| d.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl serde::Serialize for ModInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            seq.serialize_element(&[k, v])?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_repeats_and_skips_padding() {
        let info = ModInfo::parse(b"alias=a\0\0\0license=GPL\0alias=b\0depends=\0intree\0");
        assert_eq!(info.values("alias").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(info.get("license"), Some("GPL"));
        assert_eq!(info.get("depends"), Some(""));
        assert!(info.depends().is_empty());
        assert_eq!(info.get("intree"), Some(""));
        assert_eq!(ModInfo::parse(&info.to_bytes()), info);
    }

    #[test]
    fn splits_depends() {
        let info = ModInfo::parse(b"depends=scsi_mod,libata\0");
        assert_eq!(info.depends(), ["scsi_mod", "libata"]);
    }
}
