//! Exit codes, the one place they are defined (documented in `docs/exit-codes.md`).

/// Process exit status of every bootkmod command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success: done, or checked and fine.
    Ok = 0,
    /// An error: unreadable or malformed input, a failed write, a missing tool.
    Error = 1,
    /// Command-line usage error.
    Usage = 2,
    /// Checked and found incompatible, at risk, or not present.
    Negative = 3,
}

impl Exit {
    /// The more serious of two outcomes (an error outranks a negative finding), for
    /// commands that go on after one item fails.
    pub fn worst(self, other: Exit) -> Exit {
        let rank = |e: Exit| match e {
            Exit::Ok => 0,
            Exit::Negative => 1,
            Exit::Error => 2,
            Exit::Usage => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
