//! The nemesis: a Jepsen-style fault run on a real 3-member etcd. Workloads run through coord
//! from several clients, each behind its own fault proxies, while a seeded schedule
//! partitions, blackholes, slows, pauses, kills and compacts; after the final heal, checkers
//! go over the recorded history for invariant violations.
//!
//! - [`history`]: what was recorded (operations with ok / failed / unknown outcomes, faults);
//! - [`check`]: what a checker reports per invariant;
//! - [`faults`]: the seeded schedule and the nemesis that injects and heals it;
//! - [`locks`]: the locks workload (fenced counter increments) and its checker;
//! - [`ids`]: the IDs workload (marker writes fenced by the ID) and its checker;
//! - [`live_config`]: the live-config workload (multi-key publishes, `Live` loads) and its
//!   checker;
//! - [`election`]: the election workload (leaders write a log fenced by their term) and its
//!   checker;
//! - [`releases`]: the releases workload (releases, gray start / promote / abort, rollbacks)
//!   and its checker against the history and the store;
//! - [`registry`]: the registry workload (register, deregister, discover) and its checker;
//! - [`strike`]: the fault aimed at a holder, so every run proves its fences refuse;
//! - [`converge`]: after the final heal, how long until every client agrees with etcd;
//! - [`report`]: what a run did and found, and whether it passed;
//! - [`runner`]: one run, start to finish.
//!
//! Run it with `cargo run -p coord-tests --release --bin nemesis -- --duration 60s --seed 42`.

pub mod check;
pub mod converge;
pub mod election;
pub mod faults;
pub mod history;
pub mod ids;
pub mod live_config;
pub mod locks;
pub mod registry;
pub mod releases;
pub mod report;
pub mod runner;
pub mod strike;
