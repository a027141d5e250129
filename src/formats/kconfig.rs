//! Kernel build configuration (`/boot/config-KVER`): `CONFIG_X=value` lines, and
//! `# CONFIG_X is not set` comments meaning "n".

use std::collections::HashMap;

/// The options of one kernel build. Absent and `is not set` both read as not enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

impl KernelConfig {
    /// Parse config text. Lines that are neither assignments nor "is not set" comments
    /// are ignored, as Kconfig itself does.
    pub fn parse(text: &[u8]) -> KernelConfig {
        Self::parse_filtered(text, |_| true)
    }

    /// Parse keeping only `names`: a distribution config has ~10k options and a reader
    /// that needs four should not pay for the rest.
    pub fn parse_only(text: &[u8], names: &[&str]) -> KernelConfig {
        Self::parse_filtered(text, |k| names.contains(&k))
    }

    fn parse_filtered(text: &[u8], keep: impl Fn(&str) -> bool) -> KernelConfig {
        let text = String::from_utf8_lossy(text);
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    if keep(name) {
                        values.insert(name.to_string(), "n".to_string());
                    }
                }
            } else if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") && keep(k) {
                    values.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        KernelConfig { values }
    }

    /// The value of `name` (with its `CONFIG_` prefix), quotes removed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `=y` (built in). `=m` does not count: the options bootkmod asks about are bools.
    pub fn enabled(&self, name: &str) -> bool {
        self.get(name) == Some("y")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_set_unset_and_strings() {
        let c = KernelConfig::parse(
            b"CONFIG_MODVERSIONS=y\n# CONFIG_MODULE_SIG_FORCE is not set\n\
              CONFIG_MODULE_SIG_HASH=\"sha256\"\nCONFIG_X=m\ngarbage\n",
        );
        assert!(c.enabled("CONFIG_MODVERSIONS"));
        assert!(!c.enabled("CONFIG_MODULE_SIG_FORCE"));
        assert_eq!(c.get("CONFIG_MODULE_SIG_FORCE"), Some("n"));
        assert_eq!(c.get("CONFIG_MODULE_SIG_HASH"), Some("sha256"));
        assert!(!c.enabled("CONFIG_X") && !c.enabled("CONFIG_ABSENT"));
        let only = KernelConfig::parse_only(
            b"CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n",
            &["CONFIG_B", "CONFIG_C"],
        );
        assert!(!only.enabled("CONFIG_A") && only.enabled("CONFIG_B"));
        assert_eq!(only.get("CONFIG_C"), Some("n"));
    }
}
