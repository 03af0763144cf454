//! A service instance as the registry stores it (`/services/{name}/{id}`, JSON), the changes
//! a watch tells, and the checks a name, an id and an address pass before anything is
//! written.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix all services live under.
pub const SERVICES_PREFIX: &str = "/services/";

/// One instance of a service, as stored (JSON) at `/services/{name}/{id}`.
///
/// # Examples
///
/// ```
/// use coord::registry::ServiceInfo;
/// let info = ServiceInfo::new("checkout", "checkout-1", "127.0.0.1:50051")
///     .with_version("2.0.0")
///     .with_metadata("region", "eu-west");
/// assert!(info.validate().is_ok());
/// assert!(ServiceInfo::new("check/out", "1", "127.0.0.1:1").validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// Unique within the service; the last segment of the key.
    pub id: String,
    /// The service name; the middle segment of the key.
    pub name: String,
    /// Where to reach the instance: `host:port`.
    pub address: String,
    /// Free-form labels (region, zone, weight…); [`ServiceFilter`](crate::registry::ServiceFilter) can match on them. A JSON
    /// `null` (what Go writes for a nil map) reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// The instance's software version (empty if not set).
    #[serde(default)]
    pub version: String,
    /// When the instance first registered (RFC 3339 in JSON); `None` until registered.
    ///
    /// Written as `started_at`, in UTC. Read from `started_at` or `startedAt` (the original
    /// Go design's name), in RFC 3339 with any UTC offset and fraction, as Go's `time.Time`
    /// writes it; Go's zero time reads as `None`.
    #[serde(default, alias = "startedAt", with = "started_at")]
    pub started_at: Option<SystemTime>,
}

impl ServiceInfo {
    /// An instance `id` of service `name` listening on `address` (`host:port`).
    pub fn new(name: impl Into<String>, id: impl Into<String>, address: impl Into<String>) -> Self {
        ServiceInfo {
            id: id.into(),
            name: name.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
            version: String::new(),
            started_at: None,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds (or replaces) one metadata label.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The key this instance is stored at: `/services/{name}/{id}`.
    pub fn key(&self) -> String {
        instance_key(&self.name, &self.id)
    }

    /// Checks what [`Registry::register`](crate::registry::Registry::register) checks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the field: an empty `name` or `id`, one containing `/`,
    /// or an `address` that is not `host:port` with a port in 1..=65535.
    pub fn validate(&self) -> Result<()> {
        validate_segment("name", &self.name)?;
        validate_segment("id", &self.id)?;
        validate_address(&self.address)
    }
}

/// Reads a JSON `null` as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `started_at` in JSON: see [`ServiceInfo::started_at`].
mod started_at {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => parse(&text).map_err(D::Error::custom),
        }
    }

    /// RFC 3339 with `Z`, no zone (read as UTC), or a `±hh:mm` offset.
    pub(super) fn parse(text: &str) -> Result<Option<SystemTime>, String> {
        // Go's zero `time.Time`: the writer never set it.
        if text.starts_with("0001-01-01T00:00:00") {
            return Ok(None);
        }
        let invalid = |reason: &dyn std::fmt::Display| {
            format!(
                "`{}` is not an RFC 3339 time: {reason}",
                text.escape_debug()
            )
        };
        let (local, offset) = split_offset(text);
        let local = humantime::parse_rfc3339_weak(local).map_err(|e| invalid(&e))?;
        // local = utc + offset
        let utc = if offset >= 0 {
            local.checked_sub(Duration::from_secs(offset.unsigned_abs()))
        } else {
            local.checked_add(Duration::from_secs(offset.unsigned_abs()))
        };
        utc.map(Some).ok_or_else(|| invalid(&"out of range"))
    }

    /// Splits a trailing `±hh:mm` offset off, in seconds east of UTC (0 if there is none).
    fn split_offset(text: &str) -> (&str, i64) {
        let bytes = text.as_bytes();
        let Some(at) = bytes.len().checked_sub(6) else {
            return (text, 0);
        };
        let tail = &bytes[at..];
        let sign = match tail[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return (text, 0),
        };
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = &tail[range];
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        match (digits(1..3), tail[3], digits(4..6)) {
            // `at` is a char boundary: the byte there is an ASCII sign.
            (Some(hours), b':', Some(minutes)) => {
                (&text[..at], sign * (hours * 3600 + minutes * 60))
            }
            _ => (text, 0),
        }
    }
}

/// A change to a watched service, as [`Registry::watch`](crate::registry::Registry::watch) yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    /// An instance appeared (or was already there when the watch started).
    Registered(ServiceInfo),
    /// An instance's stored info changed (address, metadata, version).
    Updated(ServiceInfo),
    /// An instance is gone (deregistered, unregistered, or its lease ran out); the info is the
    /// last one known.
    Unregistered(ServiceInfo),
}

impl ServiceEvent {
    /// The instance the event is about.
    pub fn info(&self) -> &ServiceInfo {
        match self {
            ServiceEvent::Registered(info)
            | ServiceEvent::Updated(info)
            | ServiceEvent::Unregistered(info) => info,
        }
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.info().id
    }
}

pub(super) fn service_prefix(name: &str) -> String {
    format!("{SERVICES_PREFIX}{name}/")
}

pub(super) fn instance_key(name: &str, id: &str) -> String {
    format!("{SERVICES_PREFIX}{name}/{id}")
}

/// A name or id is one key segment: not empty, no `/`.
pub(super) fn validate_segment(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_argument(field, "must not be empty"));
    }
    if value.contains('/') {
        return Err(Error::invalid_argument(
            field,
            format!("`{value}` must not contain `/` (it is one segment of the key)"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid_argument(
            field,
            format!(
                "`{}` must not contain whitespace or control characters",
                value.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
pub(super) fn validate_address(address: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::invalid_argument(
            "address",
            format!("`{}` is not host:port: {reason}", address.escape_debug()),
        ))
    };
    if address.contains("://") {
        return bad("give host:port without a scheme");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return bad("the host contains whitespace or `/`");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return bad("an IPv6 host must be in brackets");
    }
    match port.parse::<u16>() {
        Ok(0) => bad("port 0"),
        Ok(_) => Ok(()),
        Err(_) => bad("the port is not a number in 1..=65535"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn field(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:50051",
            "localhost:1",
            "svc.ns.cluster.local:65535",
            "[::1]:8080",
        ] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:http",
            "::1:80",
            "http://host:80",
            "a b:80",
        ] {
            assert_eq!(field(validate_address(bad)), "address", "{bad}");
        }
    }

    #[test]
    fn names_and_ids() {
        let ok = ServiceInfo::new("api", "api-1", "h:1");
        assert!(ok.validate().is_ok());
        assert_eq!(field(ServiceInfo::new("", "1", "h:1").validate()), "name");
        assert_eq!(
            field(ServiceInfo::new("a/b", "1", "h:1").validate()),
            "name"
        );
        assert_eq!(field(ServiceInfo::new("a", "", "h:1").validate()), "id");
        assert_eq!(field(ServiceInfo::new("a", "x/y", "h:1").validate()), "id");
    }

    #[test]
    fn json_round_trip_with_rfc3339_started_at() {
        let mut info = ServiceInfo::new("api", "1", "h:1").with_metadata("region", "eu");
        info.started_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let json = serde_json::to_string(&info).unwrap();
        assert!(
            json.contains("\"started_at\":\"2023-11-14T22:13:20Z\""),
            "{json}"
        );
        let back: ServiceInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
        // Fields other writers may leave out.
        let minimal: ServiceInfo =
            serde_json::from_str(r#"{"id":"1","name":"api","address":"h:1"}"#).unwrap();
        assert_eq!(minimal, ServiceInfo::new("api", "1", "h:1"));
    }

    /// What a service built on the original Go design stores: `startedAt`, a `time.Time` in
    /// local time with nanoseconds, and a nil metadata map.
    #[test]
    fn reads_an_instance_written_by_the_original_go_design() {
        let json = r#"{
            "id": "checkout-7",
            "name": "checkout",
            "address": "10.0.0.7:50051",
            "metadata": null,
            "version": "1.4.2",
            "startedAt": "2023-11-15T06:13:20.123456789+08:00"
        }"#;
        let info: ServiceInfo = serde_json::from_str(json).unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(info.started_at, Some(expected));
        assert!(info.metadata.is_empty());
        assert_eq!(info.version, "1.4.2");
        assert_eq!(info.key(), "/services/checkout/checkout-7");

        let utc = r#"{"id":"1","name":"api","address":"h:1","metadata":{"zone":"a"},
            "startedAt":"2023-11-14T22:13:20Z"}"#;
        let info: ServiceInfo = serde_json::from_str(utc).unwrap();
        assert_eq!(
            info.started_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(info.metadata["zone"], "a");

        // Go's zero time.Time: never set.
        let zero = r#"{"id":"1","name":"api","address":"h:1","startedAt":"0001-01-01T00:00:00Z"}"#;
        assert_eq!(
            serde_json::from_str::<ServiceInfo>(zero)
                .unwrap()
                .started_at,
            None
        );
    }

    #[test]
    fn started_at_offsets() {
        let at = |s: &str| started_at::parse(s).unwrap().unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(at("2023-11-14T22:13:20Z"), base);
        assert_eq!(at("2023-11-14T22:13:20+00:00"), base);
        assert_eq!(at("2023-11-14T17:43:20-04:30"), base);
        assert_eq!(at("2023-11-15T07:13:20+09:00"), base);
        assert!(started_at::parse("yesterday").is_err());
        assert!(started_at::parse("2023-11-14T22:13:20+9:00").is_err());
    }
}
