//! The learner and the `rlvr` command line.
//!
//! # Layout
//! - [`cli`]: the `rlvr` commands (`generate`, `model import-gguf`)

pub mod cli;
