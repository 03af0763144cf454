//! coord's examples are the binaries of this package (`cargo run -p coord-examples --bin
//! NAME`). The library holds one thing: the README, whose every `rust` block is compiled and
//! run as a doc test of this crate (`cargo test -p coord-examples --doc`), so the guide
//! cannot drift from the code. A block marked `no_run` needs a real etcd; the program it
//! shows is also a binary here, which `examples/tests/readme.rs` runs against one.
//!
//! The package is not published, so the README is read from the workspace root.

/// The README, as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
