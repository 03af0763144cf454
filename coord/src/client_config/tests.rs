use super::*;
use std::collections::HashMap;

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn field_of(err: Error) -> String {
    match err {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn every_env_has_valid_defaults() {
    for env in ["development", "test", "production", "staging"] {
        ClientConfig::profile(env).validate().unwrap();
    }
    assert!(ClientConfig::profile("production").cache_ttl > Duration::ZERO);
    assert!(
        ClientConfig::profile("test").dial_timeout
            < ClientConfig::profile("production").dial_timeout
    );
}

#[test]
fn from_env_reads_endpoints_credentials_and_durations() {
    let config = ClientConfig::from_lookup(lookup(&[
        ("COORD_ENV", "production"),
        ("COORD_ENDPOINTS", "http://a:2379, http://b:2379,"),
        ("COORD_USERNAME", "app"),
        ("COORD_PASSWORD", "pw"),
        ("COORD_REQUEST_TIMEOUT", "250ms"),
    ]))
    .unwrap();
    assert_eq!(config.endpoints, ["http://a:2379", "http://b:2379"]);
    assert_eq!(config.username.as_deref(), Some("app"));
    assert_eq!(config.password.as_deref(), Some("pw"));
    assert_eq!(config.request_timeout, Duration::from_millis(250));
    assert_eq!(
        config.dial_timeout,
        ClientConfig::profile("production").dial_timeout
    );
}

#[test]
fn from_env_rejects_bad_values_naming_the_variable() {
    let err = ClientConfig::from_lookup(lookup(&[("COORD_DIAL_TIMEOUT", "soon")])).unwrap_err();
    assert_eq!(field_of(err), "COORD_DIAL_TIMEOUT");
    let err = ClientConfig::from_lookup(lookup(&[("COORD_ENDPOINTS", " , ")])).unwrap_err();
    assert_eq!(field_of(err), "COORD_ENDPOINTS");
    let err =
        ClientConfig::from_lookup(lookup(&[("COORD_TLS_CA", "/nonexistent/ca.pem")])).unwrap_err();
    assert_eq!(field_of(err), "tls.ca_file");
}

#[test]
fn from_env_reads_the_instance_and_its_labels() {
    let config = ClientConfig::from_lookup(lookup(&[
        ("COORD_INSTANCE", "checkout-1"),
        ("COORD_LABELS", "zone=eu-1, track=canary"),
    ]))
    .unwrap();
    assert_eq!(config.instance.as_deref(), Some("checkout-1"));
    assert_eq!(
        config.identity(),
        Instance::new("checkout-1")
            .label("zone", "eu-1")
            .label("track", "canary")
    );
    // Unset, the name is {hostname}-{pid} and there are no labels.
    let default = ClientConfig::from_lookup(lookup(&[])).unwrap();
    assert_eq!(default.identity(), Instance::default());
}

#[test]
fn the_snapshot_dir_comes_from_the_environment_and_from_files() {
    let config =
        ClientConfig::from_lookup(lookup(&[("COORD_SNAPSHOT_DIR", " /var/lib/app/coord ")]))
            .unwrap();
    assert_eq!(
        config.snapshot_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/app/coord"))
    );
    let empty = ClientConfig::from_lookup(lookup(&[("COORD_SNAPSHOT_DIR", "")])).unwrap();
    assert_eq!(empty.snapshot_dir, None);
    assert!(empty.etcd_options().map(|o| !o.start_offline).unwrap());
    assert!(config.etcd_options().map(|o| o.start_offline).unwrap());

    let from_file: ClientConfig =
        serde_json::from_str(r#"{ "snapshot_dir": "/tmp/snapshots" }"#).unwrap();
    assert_eq!(
        from_file,
        ClientConfig::default().with_snapshot_dir("/tmp/snapshots")
    );
    let camel: ClientConfig =
        serde_json::from_str(r#"{ "snapshotDir": "/tmp/snapshots" }"#).unwrap();
    assert_eq!(camel, from_file);
    // Unset, it is not written.
    let text = serde_json::to_string(&ClientConfig::default()).unwrap();
    assert!(!text.contains("snapshot_dir"), "{text}");
    let round: ClientConfig =
        serde_json::from_str(&serde_json::to_string(&from_file).unwrap()).unwrap();
    assert_eq!(round, from_file);
}

#[test]
fn the_cluster_name_comes_from_the_environment_and_from_files_and_is_checked() {
    let config = ClientConfig::from_lookup(lookup(&[("COORD_CLUSTER_NAME", " prod-eu ")])).unwrap();
    assert_eq!(config.cluster_name.as_deref(), Some("prod-eu"));
    let empty = ClientConfig::from_lookup(lookup(&[("COORD_CLUSTER_NAME", "")])).unwrap();
    assert_eq!(empty.cluster_name, None);
    let camel: ClientConfig = serde_json::from_str(r#"{ "clusterName": "prod-eu" }"#).unwrap();
    assert_eq!(camel, ClientConfig::default().with_cluster_name("prod-eu"));
    let text = serde_json::to_string(&ClientConfig::default()).unwrap();
    assert!(!text.contains("cluster_name"), "{text}");
    for bad in [" ", "a\0b"] {
        let error = ClientConfig::default()
            .with_cluster_name(bad)
            .validate()
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidArgument { ref field, .. } if field == "cluster_name"),
            "{error}"
        );
    }
}

#[test]
fn from_env_rejects_a_malformed_instance_naming_the_variable() {
    let err = ClientConfig::from_lookup(lookup(&[("COORD_LABELS", "zone")])).unwrap_err();
    assert!(err.to_string().contains("`zone` is not key=value"), "{err}");
    assert_eq!(field_of(err), "COORD_LABELS");
    let err = ClientConfig::from_lookup(lookup(&[("COORD_LABELS", "a=1,a=2")])).unwrap_err();
    assert_eq!(field_of(err), "COORD_LABELS");
    let err = ClientConfig::from_lookup(lookup(&[("COORD_INSTANCE", "a/b")])).unwrap_err();
    assert_eq!(field_of(err), "COORD_INSTANCE");
}

#[test]
fn the_instance_loads_from_a_file_and_validates() {
    let config: ClientConfig =
        serde_json::from_str(r#"{"instance":"api-1","labels":{"zone":"eu-1"}}"#).unwrap();
    assert_eq!(
        config.identity(),
        Instance::new("api-1").label("zone", "eu-1")
    );
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<ClientConfig>(&text).unwrap(), config);
    // Unset, neither is written.
    let plain = serde_json::to_string(&ClientConfig::default()).unwrap();
    assert!(
        !plain.contains("instance") && !plain.contains("labels"),
        "{plain}"
    );
    let bad = ClientConfig::profile("test").with_instance(Instance::new("a/b"));
    assert_eq!(field_of(bad.validate().unwrap_err()), "instance");
}

#[test]
fn the_local_env_and_coord_file_select_local_file_mode() {
    assert_eq!(
        ClientConfig::profile("local").file,
        Some(PathBuf::from("coord.toml"))
    );
    assert_eq!(ClientConfig::profile("development").file, None);
    let config =
        ClientConfig::from_lookup(lookup(&[("COORD_FILE", "/etc/app/coord.yaml")])).unwrap();
    assert_eq!(config.file, Some(PathBuf::from("/etc/app/coord.yaml")));
    let local = ClientConfig::from_lookup(lookup(&[("COORD_ENV", "local")])).unwrap();
    assert_eq!(local.file, Some(PathBuf::from("coord.toml")));
    let off =
        ClientConfig::from_lookup(lookup(&[("COORD_ENV", "local"), ("COORD_FILE", "")])).unwrap();
    assert_eq!(off.file, None);
    // Through serde: read when given, not written when unset.
    let from_file: ClientConfig = serde_json::from_str(r#"{"file":"dev.json"}"#).unwrap();
    assert_eq!(from_file.file, Some(PathBuf::from("dev.json")));
    let text = serde_json::to_string(&from_file).unwrap();
    assert_eq!(
        serde_json::from_str::<ClientConfig>(&text).unwrap(),
        from_file
    );
    let plain = serde_json::to_string(&ClientConfig::default()).unwrap();
    assert!(!plain.contains("file"), "{plain}");
}

#[test]
fn validate_names_the_bad_field() {
    let base = ClientConfig::profile("test");
    let cases: Vec<(ClientConfig, &str)> = vec![
        (
            base.clone().with_endpoints(Vec::<String>::new()),
            "endpoints",
        ),
        (base.clone().with_endpoints(["http://h"]), "endpoints"),
        (base.clone().with_endpoints(["ftp://h:1"]), "endpoints"),
        (base.clone().with_endpoints(["https://h:1"]), "endpoints"),
        (
            base.clone().with_dial_timeout(Duration::ZERO),
            "dial_timeout",
        ),
        (
            base.clone().with_request_timeout(Duration::ZERO),
            "request_timeout",
        ),
        (
            ClientConfig {
                password: Some("x".into()),
                ..base.clone()
            },
            "username",
        ),
        (
            ClientConfig {
                username: Some("u".into()),
                ..base.clone()
            },
            "password",
        ),
        (
            base.clone().with_tls(TlsConfig {
                cert_file: Some("/tmp/c.pem".into()),
                ..TlsConfig::default()
            }),
            "tls.key_file",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(
            field_of(config.validate().unwrap_err()),
            field,
            "{config:?}"
        );
    }
}

#[test]
fn the_original_designs_camel_case_names_load() {
    let config: ClientConfig = serde_json::from_str(
        r#"{"endpoints":["http://127.0.0.1:2379"],"dialTimeout":"3s","keepAliveTime":"7s",
            "keepAliveTimeout":"2s","syncInterval":"1m","cacheTTL":"20s","requestTimeout":"4s",
            "caFile":"/ca.pem","certFile":"/c.pem","keyFile":"/k.pem"}"#,
    )
    .unwrap();
    assert_eq!(config.dial_timeout, Duration::from_secs(3));
    assert_eq!(config.keep_alive_time, Duration::from_secs(7));
    assert_eq!(config.keep_alive_timeout, Duration::from_secs(2));
    assert_eq!(config.sync_interval, Duration::from_secs(60));
    assert_eq!(config.cache_ttl, Duration::from_secs(20));
    assert_eq!(config.request_timeout, Duration::from_secs(4));
    let tls = config.tls.expect("flat TLS files make a TlsConfig");
    assert_eq!(tls.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(tls.cert_file, Some(PathBuf::from("/c.pem")));
    assert_eq!(tls.key_file, Some(PathBuf::from("/k.pem")));
    // Under `tls`, camelCase too.
    let nested: ClientConfig =
        serde_json::from_str(r#"{"tls":{"caFile":"/ca.pem","domainName":"etcd"}}"#).unwrap();
    assert_eq!(nested.tls.unwrap().domain_name.as_deref(), Some("etcd"));
    // Both places at once is ambiguous; unknown names are still refused.
    let both = serde_json::from_str::<ClientConfig>(r#"{"tls":{},"caFile":"/ca.pem"}"#);
    assert!(both.unwrap_err().to_string().contains("not both"));
    assert!(serde_json::from_str::<ClientConfig>(r#"{"dialtimeout":"3s"}"#).is_err());
    // Go's encoding/json writes a time.Duration as integer nanoseconds.
    let go: ClientConfig =
        serde_json::from_str(r#"{"dialTimeout":5000000000,"cacheTTL":250000000}"#).unwrap();
    assert_eq!(go.dial_timeout, Duration::from_secs(5));
    assert_eq!(go.cache_ttl, Duration::from_millis(250));
    assert!(serde_json::from_str::<ClientConfig>(r#"{"dialTimeout":-1}"#).is_err());
    // What is missing keeps the default.
    let partial: ClientConfig = serde_json::from_str(r#"{"cacheTTL":"1s"}"#).unwrap();
    assert_eq!(partial.dial_timeout, ClientConfig::default().dial_timeout);
}

#[test]
fn serde_uses_human_durations() {
    let config: ClientConfig = serde_json::from_str(
        r#"{"endpoints":["127.0.0.1:2379"],"dial_timeout":"250ms","cache_ttl":"5s"}"#,
    )
    .unwrap();
    assert_eq!(config.dial_timeout, Duration::from_millis(250));
    assert_eq!(config.cache_ttl, Duration::from_secs(5));
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""dial_timeout":"250ms""#), "{text}");
    let back: ClientConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
    assert!(serde_json::from_str::<ClientConfig>(r#"{"dial_timeout":"soon"}"#).is_err());
    assert!(serde_json::from_str::<ClientConfig>(r#"{"endpoint":[]}"#).is_err());
}

#[test]
fn debug_redacts_the_password() {
    let config = ClientConfig::profile("test").with_user("app", "hunter2");
    let text = format!("{config:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("app"));
}

#[test]
fn etcd_options_carry_every_setting_with_the_tls_files_read() {
    // Not tempfile: it comes with the `testing` feature only.
    let dir = std::env::temp_dir().join(format!("coord-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("-----BEGIN {name}-----\n")).unwrap();
        path
    };
    let config = ClientConfig::profile("production")
        .with_endpoints(["https://a:2379", "https://b:2379"])
        .with_user("app", "pw")
        .with_tls(TlsConfig {
            domain_name: Some("etcd.internal".into()),
            ..TlsConfig::with_ca(pem("CA")).with_client_identity(pem("CERT"), pem("KEY"))
        });
    let options = config.etcd_options().unwrap();
    assert_eq!(options.endpoints, config.endpoints);
    assert_eq!(
        (
            options.dial_timeout,
            options.request_timeout,
            options.keep_alive_time,
            options.keep_alive_timeout
        ),
        (
            config.dial_timeout,
            config.request_timeout,
            config.keep_alive_time,
            config.keep_alive_timeout
        )
    );
    let credentials = options.credentials.unwrap();
    assert_eq!(
        (credentials.username.as_str(), credentials.password.as_str()),
        ("app", "pw")
    );
    let tls = options.tls.unwrap();
    assert_eq!(tls.ca_pem.unwrap(), b"-----BEGIN CA-----\n");
    let (cert, key) = tls.identity_pem.unwrap();
    assert_eq!(
        (cert.as_slice(), key.as_slice()),
        (
            &b"-----BEGIN CERT-----\n"[..],
            &b"-----BEGIN KEY-----\n"[..]
        )
    );
    assert_eq!(tls.domain_name.as_deref(), Some("etcd.internal"));

    let plain = ClientConfig::profile("test").etcd_options().unwrap();
    assert!(plain.credentials.is_none() && plain.tls.is_none());
    let unreadable = ClientConfig::profile("test")
        .with_tls(TlsConfig::with_ca(dir.join("missing.pem")))
        .etcd_options();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(field_of(unreadable.err().unwrap()), "tls.ca_file");
}

#[test]
fn for_env_takes_the_coord_variables_over_the_profile() {
    let config = ClientConfig::for_env_with(
        "production",
        lookup(&[
            ("COORD_ENDPOINTS", "http://etcd-1:2379,http://etcd-2:2379"),
            ("COORD_USERNAME", "checkout"),
            ("COORD_PASSWORD", "pw"),
            ("COORD_DIAL_TIMEOUT", "750ms"),
            ("COORD_INSTANCE", "checkout-1"),
        ]),
    )
    .unwrap();
    let production = ClientConfig::profile("production");
    assert_eq!(
        config.endpoints,
        ["http://etcd-1:2379", "http://etcd-2:2379"]
    );
    assert_eq!(config.username.as_deref(), Some("checkout"));
    assert_eq!(config.dial_timeout, Duration::from_millis(750));
    assert_eq!(config.instance.as_deref(), Some("checkout-1"));
    // What no variable names stays the profile's.
    assert_eq!(config.cache_ttl, production.cache_ttl);
    assert_eq!(config.keep_alive_time, production.keep_alive_time);
    assert_eq!(config.request_timeout, production.request_timeout);
}

#[test]
fn for_env_without_variables_is_the_profile() {
    for env in ["development", "test", "production", "local"] {
        assert_eq!(
            ClientConfig::for_env_with(env, lookup(&[])).unwrap(),
            ClientConfig::profile(env),
            "{env}"
        );
    }
}

#[test]
fn for_env_keeps_its_profile_whatever_coord_env_says() {
    let config =
        ClientConfig::for_env_with("production", lookup(&[("COORD_ENV", "test")])).unwrap();
    assert_eq!(config, ClientConfig::profile("production"));
    // from_env is the one that picks the profile from COORD_ENV.
    let picked = ClientConfig::from_lookup(lookup(&[("COORD_ENV", "test")])).unwrap();
    assert_eq!(picked, ClientConfig::profile("test"));
}

#[test]
fn builder_methods_after_for_env_win_over_the_variables() {
    let config = ClientConfig::for_env_with(
        "production",
        lookup(&[("COORD_ENDPOINTS", "http://from-env:2379")]),
    )
    .unwrap()
    .with_endpoints(["http://from-code:2379"]);
    assert_eq!(config.endpoints, ["http://from-code:2379"]);
}

#[test]
fn for_env_refuses_a_bad_variable_naming_it() {
    let err = ClientConfig::for_env_with("production", lookup(&[("COORD_CACHE_TTL", "a while")]))
        .unwrap_err();
    assert_eq!(field_of(err), "COORD_CACHE_TTL");
    let err =
        ClientConfig::for_env_with("development", lookup(&[("COORD_ENDPOINTS", ",")])).unwrap_err();
    assert_eq!(field_of(err), "COORD_ENDPOINTS");
}

#[test]
fn coord_file_turns_any_profile_into_local_file_mode_and_empty_turns_local_off() {
    let config = ClientConfig::for_env_with(
        "production",
        lookup(&[("COORD_FILE", "/etc/app/coord.toml")]),
    )
    .unwrap();
    assert_eq!(config.file, Some(PathBuf::from("/etc/app/coord.toml")));
    let off = ClientConfig::for_env_with("local", lookup(&[("COORD_FILE", "")])).unwrap();
    assert_eq!(off.file, None);
}

#[test]
fn the_default_is_the_development_profile_and_reads_no_variable() {
    assert_eq!(
        ClientConfig::default(),
        ClientConfig::profile("development")
    );
}
