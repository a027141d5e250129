//! bootkmod: verify prebuilt storage kernel modules and get them into the boot path
//! without a compiler.
//!
//! Layers, dependencies pointing downwards only (see `docs/architecture.md`):
//!
//! - [`cli`]: one file per command; parses arguments, calls the library, renders text
//!   or JSON, owns exit codes ([`exit`]).
//! - [`operations`]: everything that writes.
//! - [`engines`]: verdicts, dependency graphs, image views; pure computation.
//! - [`model`]: [`model::module::Module`] and the target system, read through a root.
//! - [`formats`]: pure byte codecs.
//!
//! [`progress`] draws progress lines of long work on a terminal.
//! [`samples`] generates well-formed modules for the embedded demo and the tests.

pub mod cli;
pub mod engines;
pub mod exit;
pub mod formats;
pub mod model;
pub mod operations;
pub mod progress;
pub mod samples;
