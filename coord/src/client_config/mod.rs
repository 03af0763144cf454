//! How to reach etcd: [`ClientConfig`] and [`TlsConfig`].
//!
//! A `ClientConfig` comes from a profile's defaults with the `COORD_*` variables over them
//! ([`ClientConfig::for_env`], or [`ClientConfig::from_env`] to take the profile from
//! `COORD_ENV` too), from code alone ([`ClientConfig::profile`] plus builder methods, which
//! reads no variable), or from a config file through serde, with durations written the human
//! way (`"5s"`, `"250ms"`). Builder methods win over variables, variables over the profile. [`ClientConfig::validate`] is called by
//! `Coord::connect` and rejects values that cannot work with [`Error::InvalidArgument`] naming
//! the field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::instance::{self, Instance};
use crate::keyring::{KeyEnv, KeyFile, KeyProvider, KeyRing};
use crate::store::{Credentials, EtcdOptions, TlsMaterial};

/// The longest timeout or keep-alive interval a `ClientConfig` accepts: a year is "forever"
/// for a network deadline, and anything near `Duration::MAX` would overflow the clock.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Connection settings for etcd. All fields are public; every one has a default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use coord::ClientConfig;
///
/// let config = ClientConfig::profile("production")
///     .with_endpoints(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
///     .with_request_timeout(Duration::from_secs(2));
/// assert!(config.validate().is_ok());
///
/// let from_file: ClientConfig = serde_json::from_str(
///     r#"{ "endpoints": ["http://127.0.0.1:2379"], "dial_timeout": "250ms" }"#,
/// ).unwrap();
/// assert_eq!(from_file.dial_timeout, Duration::from_millis(250));
/// ```
///
/// Config files written for the original (Go) design load too: every field also answers to
/// its camelCase name (`dialTimeout`, `keepAliveTime`, `keepAliveTimeout`, `syncInterval`,
/// `cacheTTL`, `requestTimeout`), a duration may be an integer number of nanoseconds (Go's
/// `encoding/json` form of `time.Duration`), and the TLS files may be given at the top level as
/// `caFile`, `certFile` and `keyFile` (or `ca_file`…) instead of under `tls`.
///
/// ```
/// use std::time::Duration;
/// let original: coord::ClientConfig = serde_json::from_str(r#"{
///     "endpoints": ["https://127.0.0.1:2379"],
///     "dialTimeout": "3s", "keepAliveTime": "10s", "keepAliveTimeout": "4s",
///     "syncInterval": "1m", "cacheTTL": "20s",
///     "caFile": "/etc/etcd/ca.pem", "certFile": "/etc/etcd/me.pem", "keyFile": "/etc/etcd/me.key"
/// }"#).unwrap();
/// assert_eq!(original.cache_ttl, Duration::from_secs(20));
/// let tls = original.tls.unwrap();
/// assert_eq!(tls.key_file.unwrap().to_str(), Some("/etc/etcd/me.key"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClientConfigFile")]
pub struct ClientConfig {
    /// etcd client URLs (`http://host:port` or `https://host:port`; a bare `host:port` is
    /// allowed).
    pub endpoints: Vec<String>,
    /// How long `Coord::connect` may take before it fails with [`Error::Unavailable`].
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// HTTP/2 keep-alive ping interval: how soon a dead connection is noticed.
    #[serde(with = "humantime_serde")]
    pub keep_alive_time: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// User name for etcd auth (with `password`).
    pub username: Option<String>,
    /// Password for etcd auth.
    pub password: Option<String>,
    /// TLS settings; `None` for plain text.
    pub tls: Option<TlsConfig>,
    /// How often cached reads do a full resync as a safety net beside the watch.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How long a cached read may be served without a watch confirming it; zero disables the
    /// read cache.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Deadline of each unary request; past it the request fails with [`Error::Timeout`].
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// This process's instance name (see [`Instance`]); `None` for `{hostname}-{pid}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// This process's instance labels (see [`Instance`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Local file mode: with a path, `Coord::connect` dials no etcd and runs on the embedded
    /// store seeded from this TOML, YAML or JSON file and following its saves (see
    /// `Coord::from_file`); the connection settings above are then unused. A relative path
    /// is taken from the working directory. `None` (the default, and not written) connects
    /// to etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Offline start: with a directory, every [`Live`](crate::Live) handle keeps the raw
    /// values of its last good value there (one file per prefix and cluster, replaced whole
    /// on each change, never torn), and a handle bound while etcd cannot be reached starts
    /// from its prefix's file of this cluster (see [`cluster_name`](Self::cluster_name))
    /// instead of failing: marked stale ([`Live::staleness`] is `Some`) until
    /// etcd answers, then following it. [`Coord::connect`](crate::Coord::connect) then
    /// succeeds while etcd is down (after waiting `dial_timeout` for it), so the process can
    /// start; calls that need etcd fail until it is back. A prefix without a usable file
    /// (none yet, or one that is truncated, corrupt, another prefix's, or saved from another
    /// etcd cluster than the one this `Coord` has reached: those are ignored with a warning)
    /// fails to bind as without the directory. With `username`/`password`,
    /// connecting still needs etcd (it logs in first). `None` (the default, and not
    /// written): nothing is kept on disk.
    ///
    /// The files hold config values as stored, secrets included, so they are private:
    /// `Coord::connect` creates the directory mode 0700 and refuses one that is not a
    /// directory, cannot be written, is owned by another user or is writable by group or
    /// others ([`Error::InvalidArgument`] naming this field and the fix, `chmod 700 DIR`);
    /// each file is written 0600. A save that fails later (the directory removed, a full or
    /// read-only disk) is retried with backoff, and listed in `Coord::health`'s
    /// [`failing_writes`](crate::Health::failing_writes) until it succeeds.
    ///
    /// [`Live::staleness`]: crate::Live::staleness
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_dir: Option<PathBuf>,
    /// A name for the etcd cluster the endpoints reach (`"prod-eu"`), which keys the files of
    /// [`snapshot_dir`](Self::snapshot_dir): processes of different clusters may then share
    /// one directory, each starting offline from its own cluster's snapshots. `None` (the
    /// default, and not written) keys them by the endpoints instead (sorted, so their order
    /// does not matter); set a name when the endpoints change (a member added, an address
    /// moved) but the cluster does not, or when different clusters sit behind the same
    /// endpoints (a port-forward, a DNS name per environment). Each file also records the
    /// cluster's etcd ID: once etcd has answered, a file of another cluster under the same
    /// name is ignored with a warning, and replaced at the next save.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Where this process's secret keys come from (see [`crate::keyring`]): with keys, typed
    /// writes seal every `#[coord(secret)]` field and reads open sealed values; without, a
    /// sealed value does not open ([`Error::Secret`]). `None` (the default, and not written)
    /// has no keys. In a config file: `"secret_keys": {"file": "/etc/coord/secret.keys"}` or
    /// `{"env": "COORD_SECRET_KEYS"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_keys: Option<SecretKeys>,
    /// Read secrets stored plain as they are, with a key ring (a migration to sealed secrets
    /// in progress; see `Coord::accept_plain_secrets`). False (the default, and not written):
    /// a plain value where a secret belongs is refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_plain_secrets: bool,
    /// Local file mode: apply a save that leaves the file with no key at all (see
    /// [`FileOptions::allow_empty`](crate::store::file::FileOptions::allow_empty)). `false`
    /// (the default, and not written): such a save is refused and the last good state kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_allow_empty: bool,
    /// Local file mode: how long the file must be quiet before a save is read (see
    /// [`FileOptions::quiet_period`](crate::store::file::FileOptions::quiet_period)); `None`
    /// (the default, and not written) for 500 ms.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_quiet_period: Option<Duration>,
}

/// TLS settings: PEM files for the CA and, for client-certificate auth, the client's pair.
/// Each field also answers to its camelCase name (`caFile`, `certFile`, `keyFile`,
/// `domainName`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA that signed etcd's server certificate. `None` trusts no one: set it.
    #[serde(alias = "caFile")]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (for `--client-cert-auth`).
    #[serde(alias = "certFile")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(alias = "keyFile")]
    pub key_file: Option<PathBuf>,
    /// The name to check the server certificate against; defaults to the endpoint's host.
    #[serde(alias = "domainName")]
    pub domain_name: Option<String>,
}

/// What a config file may hold: [`ClientConfig`]'s fields under either spelling, and the
/// original design's flat TLS file names.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClientConfigFile {
    endpoints: Vec<String>,
    #[serde(deserialize_with = "text_or_nanos", alias = "dialTimeout")]
    dial_timeout: Duration,
    #[serde(deserialize_with = "text_or_nanos", alias = "keepAliveTime")]
    keep_alive_time: Duration,
    #[serde(deserialize_with = "text_or_nanos", alias = "keepAliveTimeout")]
    keep_alive_timeout: Duration,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsConfig>,
    #[serde(deserialize_with = "text_or_nanos", alias = "syncInterval")]
    sync_interval: Duration,
    #[serde(
        deserialize_with = "text_or_nanos",
        alias = "cacheTTL",
        alias = "cacheTtl"
    )]
    cache_ttl: Duration,
    #[serde(deserialize_with = "text_or_nanos", alias = "requestTimeout")]
    request_timeout: Duration,
    instance: Option<String>,
    labels: BTreeMap<String, String>,
    file: Option<PathBuf>,
    #[serde(alias = "snapshotDir")]
    snapshot_dir: Option<PathBuf>,
    #[serde(alias = "clusterName")]
    cluster_name: Option<String>,
    #[serde(alias = "secretKeys")]
    secret_keys: Option<SecretKeys>,
    #[serde(alias = "acceptPlainSecrets")]
    accept_plain_secrets: bool,
    #[serde(alias = "fileAllowEmpty")]
    file_allow_empty: bool,
    #[serde(with = "humantime_serde::option", alias = "fileQuietPeriod")]
    file_quiet_period: Option<Duration>,
    #[serde(alias = "caFile")]
    ca_file: Option<PathBuf>,
    #[serde(alias = "certFile")]
    cert_file: Option<PathBuf>,
    #[serde(alias = "keyFile")]
    key_file: Option<PathBuf>,
}

/// A duration as coord writes it (`"5s"`, `"250ms"`) or as Go's `encoding/json` writes a
/// `time.Duration`: an integer number of nanoseconds (config files of the original design).
fn text_or_nanos<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"5s\" or \"250ms\", or a number of nanoseconds")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| E::custom(format!("`{text}`: {e}")))
        }

        fn visit_u64<E: serde::de::Error>(self, nanos: u64) -> std::result::Result<Duration, E> {
            Ok(Duration::from_nanos(nanos))
        }

        fn visit_i64<E: serde::de::Error>(self, nanos: i64) -> std::result::Result<Duration, E> {
            u64::try_from(nanos)
                .map(Duration::from_nanos)
                .map_err(|_| E::custom(format!("a duration cannot be negative: {nanos}")))
        }
    }
    deserializer.deserialize_any(Visitor)
}

impl Default for ClientConfigFile {
    fn default() -> Self {
        let c = ClientConfig::default();
        ClientConfigFile {
            endpoints: c.endpoints,
            dial_timeout: c.dial_timeout,
            keep_alive_time: c.keep_alive_time,
            keep_alive_timeout: c.keep_alive_timeout,
            username: c.username,
            password: c.password,
            tls: c.tls,
            sync_interval: c.sync_interval,
            cache_ttl: c.cache_ttl,
            request_timeout: c.request_timeout,
            instance: c.instance,
            labels: c.labels,
            file: c.file,
            snapshot_dir: c.snapshot_dir,
            cluster_name: c.cluster_name,
            secret_keys: c.secret_keys,
            accept_plain_secrets: c.accept_plain_secrets,
            file_allow_empty: c.file_allow_empty,
            file_quiet_period: c.file_quiet_period,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl TryFrom<ClientConfigFile> for ClientConfig {
    type Error = String;

    fn try_from(file: ClientConfigFile) -> std::result::Result<Self, String> {
        let flat = file.ca_file.is_some() || file.cert_file.is_some() || file.key_file.is_some();
        let tls = match (file.tls, flat) {
            (Some(_), true) => {
                return Err(
                    "give the TLS files either under `tls` or at the top level (caFile, certFile, keyFile), not both"
                        .to_owned(),
                )
            }
            (tls, false) => tls,
            (None, true) => Some(TlsConfig {
                ca_file: file.ca_file,
                cert_file: file.cert_file,
                key_file: file.key_file,
                domain_name: None,
            }),
        };
        Ok(ClientConfig {
            endpoints: file.endpoints,
            dial_timeout: file.dial_timeout,
            keep_alive_time: file.keep_alive_time,
            keep_alive_timeout: file.keep_alive_timeout,
            username: file.username,
            password: file.password,
            tls,
            sync_interval: file.sync_interval,
            cache_ttl: file.cache_ttl,
            request_timeout: file.request_timeout,
            instance: file.instance,
            labels: file.labels,
            file: file.file,
            snapshot_dir: file.snapshot_dir,
            cluster_name: file.cluster_name,
            secret_keys: file.secret_keys,
            accept_plain_secrets: file.accept_plain_secrets,
            file_allow_empty: file.file_allow_empty,
            file_quiet_period: file.file_quiet_period,
        })
    }
}

/// Where a process's secret keys come from: a key file ([`KeyFile`]: owner-only, refused
/// otherwise) or an environment variable ([`KeyEnv`]), both in [`KeyRing::parse`]'s format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretKeys {
    /// A key file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl SecretKeys {
    /// The key ring, read now.
    ///
    /// # Errors
    ///
    /// What the provider says ([`Error::InvalidArgument`] naming `secret_keys`): a missing or
    /// malformed source, a key file others can read.
    pub fn key_ring(&self) -> Result<KeyRing> {
        match self {
            SecretKeys::File(path) => KeyFile::new(path).key_ring(),
            SecretKeys::Env(var) => KeyEnv::new(var).key_ring(),
        }
    }
}

impl Default for ClientConfig {
    /// The `development` [`profile`](Self::profile); reads nothing from the environment.
    fn default() -> Self {
        Self::profile("development")
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("dial_timeout", &self.dial_timeout)
            .field("keep_alive_time", &self.keep_alive_time)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("sync_interval", &self.sync_interval)
            .field("cache_ttl", &self.cache_ttl)
            .field("request_timeout", &self.request_timeout)
            .field("instance", &self.instance)
            .field("labels", &self.labels)
            .field("file", &self.file)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("cluster_name", &self.cluster_name)
            .field("secret_keys", &self.secret_keys)
            .field("accept_plain_secrets", &self.accept_plain_secrets)
            .field("file_allow_empty", &self.file_allow_empty)
            .field("file_quiet_period", &self.file_quiet_period)
            .finish()
    }
}

impl ClientConfig {
    /// The settings of a profile, with the `COORD_*` variables of the process environment
    /// over them: what a service calls before [`Coord::connect`](crate::Coord::connect).
    ///
    /// `env` picks the profile's defaults (see [`profile`](Self::profile)); then every
    /// variable [`from_env`](Self::from_env) reads and that is set replaces its setting:
    /// `COORD_ENDPOINTS`, the credentials, TLS files, durations, the instance and its labels,
    /// `COORD_FILE` (local file mode), `COORD_SNAPSHOT_DIR`, and the rest. `COORD_ENV` is not
    /// read: the argument names the profile. Builder methods called afterwards
    /// ([`with_endpoints`](Self::with_endpoints), …) win over both, so code decides last.
    ///
    /// | setting comes from | wins over |
    /// |---|---|
    /// | a builder method after `for_env` | the variable and the profile |
    /// | a `COORD_*` variable | the profile's default |
    /// | the profile ([`profile`](Self::profile)) | nothing |
    ///
    /// For settings that must not depend on the environment (tests, tools), use
    /// [`profile`](Self::profile); to pick the profile from `COORD_ENV` too, use
    /// [`from_env`](Self::from_env).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the variable when one is set but cannot be parsed
    /// (`COORD_DIAL_TIMEOUT=soon`), or naming the field when the result does not
    /// [`validate`](Self::validate).
    ///
    /// # Examples
    ///
    /// ```standalone_crate
    /// use coord::ClientConfig;
    ///
    /// // SAFETY: this example runs in its own process, on one thread.
    /// unsafe { std::env::set_var("COORD_ENDPOINTS", "http://10.0.0.1:2379,http://10.0.0.2:2379") };
    /// let config = ClientConfig::for_env("production").unwrap();
    /// assert_eq!(config.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    /// // The rest is production's.
    /// assert_eq!(config.cache_ttl, ClientConfig::profile("production").cache_ttl);
    ///
    /// // Code has the last word.
    /// let pinned = ClientConfig::for_env("production").unwrap().with_endpoints(["http://etcd:2379"]);
    /// assert_eq!(pinned.endpoints, ["http://etcd:2379"]);
    ///
    /// unsafe { std::env::set_var("COORD_DIAL_TIMEOUT", "soon") };
    /// let error = ClientConfig::for_env("production").unwrap_err();
    /// assert!(error.to_string().contains("COORD_DIAL_TIMEOUT"), "{error}");
    /// ```
    pub fn for_env(env: &str) -> Result<Self> {
        Self::for_env_with(env, |name| std::env::var(name).ok())
    }

    /// [`for_env`](Self::for_env) with a custom lookup in place of the process environment,
    /// so it can be tested without touching it.
    ///
    /// # Errors
    ///
    /// As [`for_env`](Self::for_env).
    pub fn for_env_with(env: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::profile(env).overridden_by(lookup)
    }

    /// The defaults of a profile, reading nothing from the environment.
    ///
    /// | env | endpoints | dial | request | keep-alive | cache_ttl | sync |
    /// |---|---|---|---|---|---|---|
    /// | `development` (and anything unknown) | `http://127.0.0.1:2379` | 2 s | 5 s | 10 s / 5 s | 0 (off) | 60 s |
    /// | `test` | `http://127.0.0.1:2379` | 1 s | 2 s | 5 s / 2 s | 0 (off) | 10 s |
    /// | `production` | `http://127.0.0.1:2379` | 5 s | 5 s | 30 s / 10 s | 5 s | 5 min |
    /// | `local` | as `development`, and [`file`](Self::file) `coord.toml`: local file mode | | | | | |
    ///
    /// Production tolerates slower dials and keeps the connection probe cheap; development and
    /// test fail fast so a missing etcd is noticed at once. Endpoints are a placeholder: set
    /// them with [`with_endpoints`](Self::with_endpoints), or use [`for_env`](Self::for_env)
    /// to take `COORD_ENDPOINTS`.
    pub fn profile(env: &str) -> Self {
        let base = ClientConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            dial_timeout: Duration::from_secs(2),
            keep_alive_time: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            username: None,
            password: None,
            tls: None,
            sync_interval: Duration::from_secs(60),
            cache_ttl: Duration::ZERO,
            request_timeout: Duration::from_secs(5),
            instance: None,
            labels: BTreeMap::new(),
            file: None,
            snapshot_dir: None,
            cluster_name: None,
            secret_keys: None,
            accept_plain_secrets: false,
            file_allow_empty: false,
            file_quiet_period: None,
        };
        match env {
            "test" => ClientConfig {
                dial_timeout: Duration::from_secs(1),
                keep_alive_time: Duration::from_secs(5),
                keep_alive_timeout: Duration::from_secs(2),
                sync_interval: Duration::from_secs(10),
                request_timeout: Duration::from_secs(2),
                ..base
            },
            "production" => ClientConfig {
                dial_timeout: Duration::from_secs(5),
                keep_alive_time: Duration::from_secs(30),
                keep_alive_timeout: Duration::from_secs(10),
                sync_interval: Duration::from_secs(300),
                cache_ttl: Duration::from_secs(5),
                ..base
            },
            "local" => ClientConfig {
                file: Some(PathBuf::from("coord.toml")),
                ..base
            },
            _ => base,
        }
    }

    /// Reads the configuration from the environment: [`for_env`](Self::for_env) of the
    /// profile `COORD_ENV` names (`development` if unset), so the defaults of that profile
    /// with these variables over them: `COORD_ENDPOINTS` (comma separated), `COORD_USERNAME`,
    /// `COORD_PASSWORD`, `COORD_TLS_CA`, `COORD_TLS_CERT`, `COORD_TLS_KEY`,
    /// `COORD_TLS_DOMAIN`, and the durations `COORD_DIAL_TIMEOUT`, `COORD_REQUEST_TIMEOUT`,
    /// `COORD_KEEP_ALIVE_TIME`, `COORD_KEEP_ALIVE_TIMEOUT`, `COORD_SYNC_INTERVAL`,
    /// `COORD_CACHE_TTL` (`"5s"`, `"250ms"`), and this process's identity: `COORD_INSTANCE`
    /// (its name) and `COORD_LABELS` (`key=value,key2=value2`), and `COORD_FILE`: the config
    /// file of local file mode ([`file`](Self::file); empty for none, e.g. to turn off the
    /// `local` env's `coord.toml`), `COORD_SNAPSHOT_DIR`: the directory of offline start
    /// ([`snapshot_dir`](Self::snapshot_dir); empty for none), and `COORD_CLUSTER_NAME`
    /// ([`cluster_name`](Self::cluster_name); empty for none).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the variable when a value cannot be parsed or the
    /// result does not [`validate`](Self::validate).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with a custom lookup, so it can be tested without touching
    /// the process environment.
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = lookup("COORD_ENV").unwrap_or_else(|| "development".to_string());
        Self::for_env_with(&env, lookup)
    }

    /// This config with every `COORD_*` variable `lookup` finds set over it (all but
    /// `COORD_ENV`), validated.
    fn overridden_by(self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = self;
        if let Some(endpoints) = lookup("COORD_ENDPOINTS") {
            config.endpoints = endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            if config.endpoints.is_empty() {
                return Err(Error::invalid_argument(
                    "COORD_ENDPOINTS",
                    "no endpoint given",
                ));
            }
        }
        config.username = lookup("COORD_USERNAME").or(config.username);
        config.password = lookup("COORD_PASSWORD").or(config.password);
        let ca = lookup("COORD_TLS_CA");
        let cert = lookup("COORD_TLS_CERT");
        let key = lookup("COORD_TLS_KEY");
        let domain = lookup("COORD_TLS_DOMAIN");
        if ca.is_some() || cert.is_some() || key.is_some() || domain.is_some() {
            config.tls = Some(TlsConfig {
                ca_file: ca.map(PathBuf::from),
                cert_file: cert.map(PathBuf::from),
                key_file: key.map(PathBuf::from),
                domain_name: domain,
            });
        }
        let durations: [(&str, &mut Duration); 6] = [
            ("COORD_DIAL_TIMEOUT", &mut config.dial_timeout),
            ("COORD_REQUEST_TIMEOUT", &mut config.request_timeout),
            ("COORD_KEEP_ALIVE_TIME", &mut config.keep_alive_time),
            ("COORD_KEEP_ALIVE_TIMEOUT", &mut config.keep_alive_timeout),
            ("COORD_SYNC_INTERVAL", &mut config.sync_interval),
            ("COORD_CACHE_TTL", &mut config.cache_ttl),
        ];
        for (name, slot) in durations {
            if let Some(text) = lookup(name) {
                *slot = humantime::parse_duration(text.trim()).map_err(|e| {
                    Error::invalid_argument(name, format!("`{text}` is not a duration: {e}"))
                })?;
            }
        }
        if let Some(name) = lookup(instance::INSTANCE_VAR) {
            let name = name.trim().to_owned();
            instance::check_name(instance::INSTANCE_VAR, &name)?;
            config.instance = Some(name);
        }
        if let Some(text) = lookup(instance::LABELS_VAR) {
            config.labels = instance::parse_labels(instance::LABELS_VAR, &text)?;
        }
        if let Some(file) = lookup("COORD_FILE") {
            let file = file.trim();
            config.file = (!file.is_empty()).then(|| PathBuf::from(file));
        }
        if let Some(dir) = lookup("COORD_SNAPSHOT_DIR") {
            let dir = dir.trim();
            config.snapshot_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
        }
        if let Some(name) = lookup("COORD_CLUSTER_NAME") {
            let name = name.trim();
            config.cluster_name = (!name.is_empty()).then(|| name.to_owned());
        }
        if let Some(path) = lookup("COORD_SECRET_KEYS_FILE") {
            let path = path.trim();
            config.secret_keys = (!path.is_empty()).then(|| SecretKeys::File(PathBuf::from(path)));
        }
        if let Some(flag) = lookup("COORD_ACCEPT_PLAIN_SECRETS") {
            config.accept_plain_secrets = matches!(flag.trim(), "1" | "true" | "yes");
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets the endpoints.
    #[must_use]
    pub fn with_endpoints<S: Into<String>>(
        mut self,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Self {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Sets user name and password.
    #[must_use]
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Sets TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the dial timeout.
    #[must_use]
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the read-cache TTL (zero disables the cache).
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Sets the full-resync interval of cached reads.
    #[must_use]
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// Sets the config file of local file mode (see [`file`](Self::file)).
    #[must_use]
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Sets where the secret keys come from (see [`secret_keys`](Self::secret_keys)).
    #[must_use]
    pub fn with_secret_keys(mut self, keys: SecretKeys) -> Self {
        self.secret_keys = Some(keys);
        self
    }

    /// Sets the directory of offline start (see [`snapshot_dir`](Self::snapshot_dir)).
    #[must_use]
    pub fn with_snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// The options of local file mode (see [`file_allow_empty`](Self::file_allow_empty) and
    /// [`file_quiet_period`](Self::file_quiet_period)).
    pub fn file_options(&self) -> crate::store::file::FileOptions {
        let options =
            crate::store::file::FileOptions::default().with_allow_empty(self.file_allow_empty);
        match self.file_quiet_period {
            Some(quiet) => options.with_quiet_period(quiet),
            None => options,
        }
    }

    /// Names the cluster the endpoints reach (see [`cluster_name`](Self::cluster_name)).
    #[must_use]
    pub fn with_cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = Some(name.into());
        self
    }

    /// Sets this process's instance name and labels.
    #[must_use]
    pub fn with_instance(mut self, instance: Instance) -> Self {
        self.instance = Some(instance.name);
        self.labels = instance.labels;
        self
    }

    /// The identity a `Coord` connected with this config has: [`instance`](Self::instance)
    /// (default `{hostname}-{pid}`) with [`labels`](Self::labels).
    pub fn identity(&self) -> Instance {
        Instance {
            name: self.instance.clone().unwrap_or_else(instance::default_name),
            labels: self.labels.clone(),
        }
    }

    /// Checks every field; the first bad one is reported as [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid_argument(
                "endpoints",
                "at least one endpoint is needed",
            ));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint, self.tls.is_some())?;
        }
        for (field, value) in [
            ("dial_timeout", self.dial_timeout),
            ("keep_alive_time", self.keep_alive_time),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("request_timeout", self.request_timeout),
            ("sync_interval", self.sync_interval),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_argument(field, "must be greater than zero"));
            }
        }
        // Deadlines are added to "now" inside the transport; a duration past any real clock
        // (Duration::MAX, say) would overflow there. The intervals below may be "never".
        for (field, value) in [
            ("dial_timeout", self.dial_timeout),
            ("keep_alive_time", self.keep_alive_time),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value > MAX_TIMEOUT {
                return Err(Error::invalid_argument(
                    field,
                    format!(
                        "must be at most {}",
                        humantime::format_duration(MAX_TIMEOUT)
                    ),
                ));
            }
        }
        match (&self.username, &self.password) {
            (Some(user), _) if user.is_empty() => {
                return Err(Error::invalid_argument("username", "must not be empty"));
            }
            (Some(_), None) => {
                return Err(Error::invalid_argument(
                    "password",
                    "a username needs a password",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_argument(
                    "username",
                    "a password needs a username",
                ));
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if let Some(name) = &self.cluster_name
            && (name.trim().is_empty() || name.contains('\0'))
        {
            return Err(Error::invalid_argument(
                "cluster_name",
                "must not be empty or hold NUL (leave it unset to key snapshots by the endpoints)",
            ));
        }
        self.identity().validate()
    }
    /// The store's connection settings: these, with the TLS files read into memory.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field if a TLS file cannot be read or is not PEM.
    pub(crate) fn etcd_options(&self) -> Result<EtcdOptions> {
        let credentials = match (&self.username, &self.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let tls = self.tls.as_ref().map(TlsConfig::material).transpose()?;
        Ok(EtcdOptions {
            endpoints: self.endpoints.clone(),
            dial_timeout: self.dial_timeout,
            request_timeout: self.request_timeout,
            keep_alive_time: self.keep_alive_time,
            keep_alive_timeout: self.keep_alive_timeout,
            credentials,
            tls,
            start_offline: self.snapshot_dir.is_some(),
        })
    }
}

impl TlsConfig {
    /// TLS trusting the CA in `ca_file`.
    pub fn with_ca(ca_file: impl Into<PathBuf>) -> Self {
        TlsConfig {
            ca_file: Some(ca_file.into()),
            ..Self::default()
        }
    }

    /// Adds a client certificate and key.
    #[must_use]
    pub fn with_client_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// Checks that the files exist and are readable, and that cert and key come together.
    pub fn validate(&self) -> Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            let missing = if self.cert_file.is_none() {
                "tls.cert_file"
            } else {
                "tls.key_file"
            };
            return Err(Error::invalid_argument(
                missing,
                "a client certificate needs both cert_file and key_file",
            ));
        }
        for (field, path) in [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ] {
            if let Some(path) = path {
                read_pem(field, path)?;
            }
        }
        Ok(())
    }
    /// The files read into memory, for the store.
    fn material(&self) -> Result<TlsMaterial> {
        let ca_pem = match &self.ca_file {
            Some(ca) => Some(read_pem("tls.ca_file", ca)?),
            None => None,
        };
        let identity_pem = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem("tls.cert_file", cert)?,
                read_pem("tls.key_file", key)?,
            )),
            _ => None,
        };
        Ok(TlsMaterial {
            ca_pem,
            identity_pem,
            domain_name: self.domain_name.clone(),
        })
    }
}

/// Reads a PEM file; a missing or unreadable file is [`Error::InvalidArgument`] naming `field`.
pub(crate) fn read_pem(field: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::invalid_argument(field, format!("cannot read `{}`: {e}", path.display()))
    })?;
    if !bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(Error::invalid_argument(
            field,
            format!("`{}` is not a PEM file", path.display()),
        ));
    }
    Ok(bytes)
}

fn check_endpoint(endpoint: &str, tls: bool) -> Result<()> {
    let rest = match endpoint.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", rest)) => {
            if !tls {
                return Err(Error::invalid_argument(
                    "endpoints",
                    format!("`{endpoint}` is https but no tls config is set"),
                ));
            }
            rest
        }
        Some((scheme, _)) => {
            return Err(Error::invalid_argument(
                "endpoints",
                format!("`{endpoint}`: scheme `{scheme}` is not http or https"),
            ));
        }
        None => endpoint,
    };
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(Error::invalid_argument(
            "endpoints",
            format!("`{endpoint}` is not host:port"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
