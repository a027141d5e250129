//! Engines: compute verdicts, dependency graphs and image views from the model.
//! They return plans and reports; they never touch disk.

pub mod depmod;
