//! Metrics, through the [`metrics`] facade: coord records, the application picks the
//! exporter (Prometheus, StatsD, ...) by installing a recorder. Without one, recording costs
//! a few nanoseconds and goes nowhere.
//!
//! Names and labels follow Prometheus conventions (`_total` counters, `_seconds` histograms,
//! base units, a few bounded labels). [`METRICS`] lists every one; the README's table is
//! made from it. A prefix label is a bound config prefix, so its values are as many as the
//! prefixes an application binds.

use std::time::Duration;

use crate::error::Error;

/// Every metric coord records: name, kind, labels, meaning.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    (
        STORE_REQUESTS,
        "counter",
        "op",
        "store requests (round trips), by operation",
    ),
    (
        STORE_ERRORS,
        "counter",
        "op, error",
        "store requests that failed, by operation and error kind",
    ),
    (STORE_DURATION, "histogram", "op", "store request latency"),
    (
        CONFIG_RELOADS,
        "counter",
        "prefix, result",
        "`Live` rebuilds: `applied` or `rejected` (last good value kept)",
    ),
    (
        WATCH_RECONNECTS,
        "counter",
        "",
        "shared watches broken and reconnecting",
    ),
    (
        WATCH_RELISTS,
        "counter",
        "",
        "shared watch relists (after a reconnect or compaction, and the periodic resync)",
    ),
    (
        LEASE_RENEWALS,
        "counter",
        "result",
        "lease renewals: `ok`, `failed` (retried) or `lost`",
    ),
    (
        LEASE_RENEWAL_DURATION,
        "histogram",
        "",
        "lease renewal latency",
    ),
    (
        LOCK_WAIT,
        "histogram",
        "",
        "time from `acquire` to holding the lock",
    ),
    (LOCKS_HELD, "gauge", "", "locks held by this process"),
    (IDS_HELD, "gauge", "", "instance IDs held by this process"),
    (REGISTRATIONS, "counter", "", "service registrations made"),
    (
        REREGISTRATIONS,
        "counter",
        "",
        "registrations put back or re-made after a deleted key or a lost lease",
    ),
    (
        STATUS_WRITE_FAILURES,
        "counter",
        "",
        "rollout status keys whose write failed (each is retried, and listed in `health()` \
         until written)",
    ),
    (
        SNAPSHOT_SAVE_FAILURES,
        "counter",
        "prefix",
        "offline-start snapshot files that could not be saved (each is retried, and listed in \
         `health()` until saved)",
    ),
    (
        CONNECTION_STATES,
        "counter",
        "state",
        "connection state changes, by the state entered: `suspended`, `lost`, `reconnected`",
    ),
];

pub(crate) const STORE_REQUESTS: &str = "coord_store_requests_total";
pub(crate) const STORE_ERRORS: &str = "coord_store_errors_total";
pub(crate) const STORE_DURATION: &str = "coord_store_request_duration_seconds";
pub(crate) const CONFIG_RELOADS: &str = "coord_config_reloads_total";
pub(crate) const WATCH_RECONNECTS: &str = "coord_watch_reconnects_total";
pub(crate) const WATCH_RELISTS: &str = "coord_watch_relists_total";
pub(crate) const LEASE_RENEWALS: &str = "coord_lease_renewals_total";
pub(crate) const LEASE_RENEWAL_DURATION: &str = "coord_lease_renewal_duration_seconds";
pub(crate) const LOCK_WAIT: &str = "coord_lock_wait_seconds";
pub(crate) const LOCKS_HELD: &str = "coord_locks_held";
pub(crate) const IDS_HELD: &str = "coord_ids_held";
pub(crate) const REGISTRATIONS: &str = "coord_registrations_total";
pub(crate) const REREGISTRATIONS: &str = "coord_reregistrations_total";
pub(crate) const CONNECTION_STATES: &str = "coord_connection_state_changes_total";
pub(crate) const STATUS_WRITE_FAILURES: &str = "coord_status_write_failures_total";
pub(crate) const SNAPSHOT_SAVE_FAILURES: &str = "coord_snapshot_save_failures_total";

/// One store request.
pub(crate) fn store_request(op: &'static str, took: Duration, error: Option<&Error>) {
    metrics::counter!(STORE_REQUESTS, "op" => op).increment(1);
    metrics::histogram!(STORE_DURATION, "op" => op).record(took.as_secs_f64());
    if let Some(error) = error {
        metrics::counter!(STORE_ERRORS, "op" => op, "error" => error_kind(error)).increment(1);
    }
}

/// A bounded label for an error: its variant.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::NotFound { .. } => "not_found",
        Error::Conflict { .. } => "conflict",
        Error::Timeout { .. } => "timeout",
        Error::Unavailable { .. } => "unavailable",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        Error::LeaseNotFound { .. } => "lease_not_found",
        Error::Compacted { .. } => "compacted",
        Error::Closed => "closed",
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::Unauthenticated { .. } => "unauthenticated",
        Error::PermissionDenied { .. } => "permission_denied",
        _ => "other",
    }
}

/// A `Live` rebuild of `prefix`: applied, or rejected.
pub(crate) fn config_reload(prefix: &str, applied: bool) {
    let result = if applied { "applied" } else { "rejected" };
    metrics::counter!(CONFIG_RELOADS, "prefix" => prefix.to_owned(), "result" => result)
        .increment(1);
}

/// A `Coord` entered `state` (see `crate::connection`).
pub(crate) fn connection_state(state: &'static str) {
    metrics::counter!(CONNECTION_STATES, "state" => state).increment(1);
}

/// A status transaction of `keys` status keys failed.
pub(crate) fn status_write_failed(keys: usize) {
    metrics::counter!(STATUS_WRITE_FAILURES).increment(keys as u64);
}

/// A snapshot file of `prefix` could not be saved.
pub(crate) fn snapshot_save_failed(prefix: &str) {
    metrics::counter!(SNAPSHOT_SAVE_FAILURES, "prefix" => prefix.to_owned()).increment(1);
}

pub(crate) fn watch_reconnect() {
    metrics::counter!(WATCH_RECONNECTS).increment(1);
}

pub(crate) fn watch_relist() {
    metrics::counter!(WATCH_RELISTS).increment(1);
}

/// One lease renewal: `ok`, `failed` or `lost`, and how long it took.
pub(crate) fn lease_renewal(result: &'static str, took: Duration) {
    metrics::counter!(LEASE_RENEWALS, "result" => result).increment(1);
    metrics::histogram!(LEASE_RENEWAL_DURATION).record(took.as_secs_f64());
}

pub(crate) fn lock_acquired(waited: Duration) -> GaugeUnit {
    metrics::histogram!(LOCK_WAIT).record(waited.as_secs_f64());
    GaugeUnit::new(LOCKS_HELD)
}

pub(crate) fn id_held() -> GaugeUnit {
    GaugeUnit::new(IDS_HELD)
}

pub(crate) fn registration() {
    metrics::counter!(REGISTRATIONS).increment(1);
}

pub(crate) fn reregistration() {
    metrics::counter!(REREGISTRATIONS).increment(1);
}

/// One unit of a "held" gauge, given back when dropped: the gauge is right however its
/// holder ends (released, dropped, abandoned).
#[derive(Debug)]
pub(crate) struct GaugeUnit(&'static str);

impl GaugeUnit {
    fn new(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        GaugeUnit(gauge)
    }
}

impl Drop for GaugeUnit {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
