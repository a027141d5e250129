//! Engines: compute verdicts, dependency graphs and image views from the model.
//! They return plans and reports; they never touch disk.

pub mod choose;
pub mod compat;
pub mod depmod;
pub mod doctor;
pub mod dud;
pub mod dud_package;
pub mod initramfs;
pub mod inject;
pub mod sign;
pub mod status;
