//! The nemesis: a Jepsen-style fault run on a real 3-member etcd. Workloads run through coord
//! from several clients, each behind its own fault proxies, while a seeded schedule
//! partitions, blackholes, slows, pauses, kills and compacts; after the final heal, checkers
//! go over the recorded history for invariant violations.
//!
//! - [`history`]: what was recorded (operations with ok / failed / unknown outcomes, faults);
//! - [`faults`]: the seeded schedule and the nemesis that injects and heals it;
//! - [`locks`]: the locks workload (fenced counter increments) and its checker;
//! - [`runner`]: one run, start to finish, and its report.
//!
//! Only the locks workload exists so far; IDs, live config and the registry are to come.
//! Run it with `cargo run -p coord-tests --release --bin nemesis -- --duration 60s --seed 42`.

pub mod faults;
pub mod history;
pub mod locks;
pub mod runner;
