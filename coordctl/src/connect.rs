//! Building the `ClientConfig` from the environment and the flags, and connecting.

use coord::{ClientConfig, Coord};

use crate::cli::Connection;
use crate::error::{CliError, CliResult};

/// `ClientConfig::from_env` (the `COORD_*` variables, with `--env` standing for `COORD_ENV`),
/// then the flags on top.
pub fn client_config(flags: &Connection) -> CliResult<ClientConfig> {
    let env = flags.env.clone();
    let mut config = ClientConfig::from_lookup(|name| match (name, &env) {
        ("COORD_ENV", Some(env)) => Some(env.clone()),
        _ => std::env::var(name).ok(),
    })?;
    if !flags.endpoints.is_empty() {
        config = config.with_endpoints(flags.endpoints.iter().cloned());
    }
    let password = match (&flags.password, &flags.password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => Some(read_password(path)?),
        (None, None) => None,
    };
    if let Some(user) = &flags.user {
        let password = password
            .or_else(|| config.password.clone())
            .ok_or_else(|| CliError::Usage("--user needs --password or --password-file".into()))?;
        config = config.with_user(user.clone(), password);
    } else if let Some(password) = password {
        config.password = Some(password);
    }
    if flags.cacert.is_some() || flags.cert.is_some() {
        let mut tls = config.tls.clone().unwrap_or_default();
        if let Some(ca) = &flags.cacert {
            tls.ca_file = Some(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&flags.cert, &flags.key) {
            tls = tls.with_client_identity(cert.clone(), key.clone());
        }
        config = config.with_tls(tls);
    }
    // The library's own message speaks of a "tls config"; an operator needs the flag's name.
    if config.tls.is_none() {
        if let Some(endpoint) = config.endpoints.iter().find(|e| e.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "{endpoint} is https: pass --cacert (and --cert/--key if etcd asks for a client certificate)"
            )));
        }
    }
    if let Some(path) = &flags.secret_keys {
        config = config.with_secret_keys(coord::SecretKeys::File(path.clone()));
    }
    if let Some(timeout) = flags.dial_timeout {
        config = config.with_dial_timeout(timeout);
    }
    // A one-shot command reads etcd directly: a read cache would only add a watch.
    config = config.with_cache_ttl(std::time::Duration::ZERO);
    config.validate()?;
    Ok(config)
}

/// Connects, failing with one line that names the endpoints when etcd cannot be reached.
pub async fn connect(config: ClientConfig) -> CliResult<Coord> {
    let endpoints = config.endpoints.join(",");
    match Coord::connect(config).await {
        Ok(coord) => Ok(coord),
        Err(e @ coord::Error::Unavailable { .. }) => Err(CliError::Coord(e)),
        Err(e) if e.is_transient() => Err(CliError::Coord(coord::Error::Unavailable {
            endpoints,
            reason: e.to_string(),
        })),
        Err(e) => Err(CliError::Coord(e)),
    }
}

fn read_password(path: &std::path::Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
