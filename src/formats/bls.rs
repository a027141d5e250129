//! A Boot Loader Specification entry (`$BOOT/loader/entries/*.conf`): one `key value`
//! per line, `#` comments. `initrd` repeats (the boot loader loads each, in order, and
//! the kernel unpacks them in that order, so later files win); paths are relative to
//! the root of the partition holding the entries. grub's BLS entries (RHEL, Fedora) may
//! name grub variables (`$tuned_initrd`) there: those are not files and are kept apart.

/// The keys of an entry bootkmod uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub title: Option<String>,
    pub version: Option<String>,
    pub linux: Option<String>,
    /// Every `initrd` path, in order (a line may hold several, space-separated).
    pub initrd: Vec<String>,
    /// grub variables on `initrd` lines (`$tuned_initrd`), expanded only at boot.
    pub initrd_variables: Vec<String>,
    pub options: Option<String>,
    /// A Unified Kernel Image (`efi` key) instead of `linux` and `initrd`.
    pub efi: Option<String>,
}

impl Entry {
    /// Parse an entry's text. Never fails: unknown keys and odd lines are ignored, as
    /// boot loaders do.
    pub fn parse(text: &str) -> Entry {
        let mut e = Entry::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            let value = || (!value.is_empty()).then(|| value.to_string());
            match key {
                "title" => e.title = value(),
                "version" => e.version = value(),
                "linux" => e.linux = value(),
                "options" => e.options = value(),
                "efi" => e.efi = value(),
                "initrd" => {
                    for word in value().unwrap_or_default().split_ascii_whitespace() {
                        if word.starts_with('$') {
                            e.initrd_variables.push(word.to_string());
                        } else {
                            e.initrd.push(word.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }

    /// Does this entry boot kernel `release`? Its `version`, else its `linux` (or
    /// `efi`) path naming the release as a file suffix (`vmlinuz-K`) or a directory
    /// (`/TOKEN/K/linux`).
    pub fn boots(&self, release: &str) -> bool {
        if let Some(v) = &self.version {
            return v == release;
        }
        let names = |p: &String| {
            let p = p.trim_end_matches('/');
            p.ends_with(&format!("-{release}"))
                || p.ends_with(&format!("-{release}.efi"))
                || p.split('/').any(|c| c == release)
        };
        self.linux.as_ref().is_some_and(names) || self.efi.as_ref().is_some_and(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhel_entry_with_a_grub_variable() {
        let e = Entry::parse(
            "title Red Hat Enterprise Linux (5.14.0-362.el9.x86_64) 9.3\n\
             version 5.14.0-362.el9.x86_64\nlinux /vmlinuz-5.14.0-362.el9.x86_64\n\
             initrd /initramfs-5.14.0-362.el9.x86_64.img $tuned_initrd\n\
             options root=/dev/mapper/rhel-root ro $tuned_params\ngrub_users $grub_users\n",
        );
        assert_eq!(e.version.as_deref(), Some("5.14.0-362.el9.x86_64"));
        assert_eq!(e.initrd, ["/initramfs-5.14.0-362.el9.x86_64.img"]);
        assert_eq!(e.initrd_variables, ["$tuned_initrd"]);
        assert!(e.boots("5.14.0-362.el9.x86_64"));
        assert!(!e.boots("5.14.0-362.el9.x86_6"));
    }

    #[test]
    fn several_initrd_lines_keep_their_order() {
        let e = Entry::parse("linux /abc/6.1.0-57-amd64/linux\ninitrd /abc/6.1.0-57-amd64/microcode\n# x\ninitrd   /abc/6.1.0-57-amd64/initrd /extra\n");
        assert_eq!(
            e.initrd,
            ["/abc/6.1.0-57-amd64/microcode", "/abc/6.1.0-57-amd64/initrd", "/extra"]
        );
        assert!(e.boots("6.1.0-57-amd64"));
        assert!(!e.boots("6.1.0-5"));
    }

    #[test]
    fn odd_text_is_no_panic() {
        for t in ["", "initrd", "version\n", "\u{0}\u{ffff}", "linux \t\n initrd  \n"] {
            let e = Entry::parse(t);
            assert!(e.initrd.is_empty());
        }
    }
}
