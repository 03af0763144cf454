//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use coord::config::REDACTED;

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  error (etcd unreachable, a value refused by the published schema, a rejected rollout,
     a rollout plan aborted by a failed gate, a declined confirmation…)
  2  usage (bad flags or arguments)
  3  not found (key, release, schema, lock; `config rollout --wait` with no instance on
     the prefix)
  4  conflict (a version or release changed meanwhile, a lock is held or changed hands, a
     rollout plan cancelled while `config plan start|drive|status --watch` followed it, a
     plan already finished or another one still running)
  5  outcome unknown (a write was sent but its answer was lost: it may or may not have been
     applied; read the value before running the command again)
  6  denied (the access policy or etcd's permissions refuse it, the prefix requires review,
     a proposal one may not approve; `auth check` of a denied action)

Connection: COORD_ENDPOINTS, COORD_ENV, COORD_USERNAME, COORD_PASSWORD, COORD_TLS_CA,
COORD_TLS_CERT, COORD_TLS_KEY, COORD_DIAL_TIMEOUT… (see coord::ClientConfig::from_env);
flags override them.";

/// Operate coord: config, releases and rollouts, locks, instance IDs, services.
///
/// Every change goes through the checks the coord library makes (published schemas, release
/// guards).
#[derive(Debug, Parser)]
#[command(name = "coordctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Connection flags (override the `COORD_*` environment).
    #[command(flatten)]
    pub connection: Connection,

    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document (for `watch`: one JSON object per line).
    Json,
}

/// Where etcd is and how to log in. `Debug` shows whether a password was given, never it.
#[derive(Args)]
pub struct Connection {
    /// etcd endpoints, comma separated (default: COORD_ENDPOINTS, else http://127.0.0.1:2379).
    #[arg(long, global = true, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Profile of timeouts and defaults: development, test, production, or local: no etcd,
    /// the file coord.toml in the working directory instead (writes are not saved to it)
    /// (default: COORD_ENV, else development).
    #[arg(long, global = true)]
    pub env: Option<String>,
    /// etcd user name.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// etcd password (prefer --password-file).
    #[arg(long, global = true, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// A file whose first line is the etcd password.
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long = "cert", id = "tls_cert", global = true, requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM), with --cert.
    #[arg(long = "key", id = "tls_key", global = true, requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// How long to wait for etcd before giving up (e.g. 2s).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub dial_timeout: Option<Duration>,
    /// A key file (`ID BASE64` per line, newest first, mode 0600) to seal and open secrets
    /// with (default: COORD_SECRET_KEYS_FILE).
    #[arg(long, global = true)]
    pub secret_keys: Option<PathBuf>,
    /// Act as this principal of the access policy, on a connection without etcd auth (a
    /// claim the policy takes at its word; logged in with --user, the principal is the etcd
    /// user). For `console`: the delegate its writes act for each token's principal through.
    #[arg(
        long = "as",
        id = "as_principal",
        global = true,
        value_name = "PRINCIPAL"
    )]
    pub principal: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Connection {
            endpoints,
            env,
            user,
            password,
            password_file,
            cacert,
            cert,
            key,
            dial_timeout,
            secret_keys,
            principal,
        } = self;
        f.debug_struct("Connection")
            .field("endpoints", endpoints)
            .field("env", env)
            .field("user", user)
            .field("password", &password.as_ref().map(|_| REDACTED))
            .field("password_file", password_file)
            .field("cacert", cacert)
            .field("cert", cert)
            .field("key", key)
            .field("dial_timeout", dial_timeout)
            .field("secret_keys", secret_keys)
            .field("principal", principal)
            .finish()
    }
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and change config keys, releases and rollouts.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and break locks.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Inspect instance IDs, and release one held by a stuck process.
    #[command(subcommand)]
    Ids(IdsCommand),
    /// Inspect the service registry.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Inspect elections.
    #[command(subcommand)]
    Election(ElectionCommand),
    /// Secrets sealed at rest: which key each is sealed under, rotation, migration.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The access policy: who may do what under which prefix, enforced by coord and by etcd.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The audit log: who released, proposed, approved, broke a lock… and what was refused.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Is etcd reachable? Its version, revision and latency.
    Health,
    /// Serve the web console: browse, edit and release config, watch rollouts, roll back.
    ///
    /// Read-only unless --token-file is given; listens on loopback unless told otherwise.
    /// Beyond loopback it needs --read-token-file (every read then needs a token) and
    /// --allowed-host.
    Console(ConsoleArgs),
}

/// `coordctl auth …`: the access policy (see `coord::access`).
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Make etcd's users, roles and permissions and the stored policy what a TOML policy file
    /// says: prints the changes (`+` add, `-` remove, `!` cannot, `~` the stored policy),
    /// asks, applies. Needs etcd's root role. Applying the same file again changes nothing.
    Apply {
        /// The policy (TOML: [principals.NAME], [roles.NAME], [review."/prefix"]).
        file: PathBuf,
        /// Passwords of the principals etcd has no user for yet (TOML: `name = "password"`,
        /// mode 0600).
        #[arg(long)]
        passwords: Option<PathBuf>,
        /// Print the changes, apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (asked on stderr, answered with a line on stdin).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// May PRINCIPAL do ACTION on PREFIX under the stored policy, and why (exit 0 if allowed,
    /// 6 if denied).
    Check {
        /// The principal (an etcd user, or a console token's principal).
        principal: String,
        /// read, propose, release, approve or admin.
        action: String,
        /// The config prefix.
        prefix: String,
    },
    /// Print the stored policy as TOML (exit 3 if none is stored).
    Show,
}

/// `coordctl audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit records, oldest first: time, principal (via), action, target, detail, outcome.
    Ls {
        /// Only records on this prefix or under it (a config prefix, a lock name…).
        #[arg(long)]
        prefix: Option<String>,
        /// Only records no older than this (e.g. 1h, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only records of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// The newest N records at most (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete this connection's own audit records: those older than --older-than, and all
    /// but the newest --keep.
    Trim {
        /// Delete records older than this (e.g. 90d).
        #[arg(long, value_parser = parse_duration, required_unless_present = "keep")]
        older_than: Option<Duration>,
        /// Keep at most this many of the newest records.
        #[arg(long)]
        keep: Option<usize>,
    },
}

/// `coordctl secrets …`: the secrets of a prefix, as its published schema marks them.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// List each secret key of a prefix with the key id it is sealed under (or `plain`).
    Status {
        /// The prefix.
        prefix: String,
    },
    /// Seal every secret of a prefix under the newest key of --secret-keys, as one release
    /// (recorded, rollback-able). Secrets under an older key are sealed anew.
    Rotate {
        /// The prefix.
        prefix: String,
        /// Why (shown in history).
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// Seal the secrets of a prefix that are stored plain, as one release (the migration to
    /// sealed secrets; the same release as `rotate`, which also re-seals old envelopes).
    Encrypt {
        /// The prefix.
        prefix: String,
        /// Why (shown in history).
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
}

/// `coordctl console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to listen on. A non-loopback address exposes the console (plain HTTP) to the
    /// network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Allow writes to whoever presents a token from this file: one `NAME:TOKEN`,
    /// `NAME=PRINCIPAL:TOKEN` (or bare `TOKEN`) per line; NAME is recorded as the author of
    /// their releases, and their writes are checked by the access policy as PRINCIPAL (by
    /// default NAME; the console's own etcd user must be a `delegate`). Without it the
    /// console is read-only. A file other users can open is refused (chmod 600).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Allow reads to whoever presents a token from this file (same format; a write token
    /// reads too). Required off loopback; on loopback, without it reads need no token.
    #[arg(long)]
    pub read_token_file: Option<PathBuf>,
    /// A host name browsers reach the console by (repeatable); a request naming another
    /// host is refused. Required off loopback; on loopback the loopback names are allowed.
    #[arg(long, value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Event streams (live rollout views, two etcd watches each) open at once at most.
    #[arg(long, default_value_t = 16)]
    pub max_streams: usize,
    /// An event stream with no event for this long ends (the page reconnects).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub stream_idle: Duration,
}

/// `coordctl config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print one key's value (secrets as `<redacted>`).
    Get {
        /// The full key, e.g. /config/checkout/timeout_secs.
        key: String,
    },
    /// Print every key under a prefix with its value (secrets as `<redacted>`).
    List {
        /// The prefix, e.g. /config/checkout.
        prefix: String,
    },
    /// Write one key, checked against the published schema of its prefix (under a schema:
    /// a release of that key, in history with author and message).
    Set(SetArgs),
    /// Delete one key (under a published schema: a release that removes it, guarded by the
    /// version it read, so a key written meanwhile is a conflict, exit 4).
    Delete {
        /// The full key.
        key: String,
        /// Why (shown in history; under a published schema).
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// Delete a key the published schema requires (every instance then keeps its last
        /// good value and reports the error).
        #[arg(long)]
        force: bool,
    },
    /// Print one line per change under a prefix, until Ctrl-C.
    Watch {
        /// The prefix.
        prefix: String,
    },
    /// The published schema of a prefix: fields, types, defaults, docs.
    Describe {
        /// The prefix the struct is bound at.
        prefix: String,
    },
    /// Releases of a prefix, newest first.
    History {
        /// The prefix.
        prefix: String,
        /// How many releases to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// How each key differs between two releases.
    Diff {
        /// The prefix.
        prefix: String,
        /// The older release.
        from: u64,
        /// The newer release.
        to: u64,
    },
    /// Release values from a JSON file (an object: relative key → value) as one change.
    Release(ReleaseArgs),
    /// Restore the values of an earlier release (recorded as a release).
    Rollback {
        /// The prefix.
        prefix: String,
        /// The release to go back to.
        seq: u64,
        /// Why.
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// Refuse (exit 4) unless the latest release is still this one.
        #[arg(long)]
        expect_latest: Option<u64>,
    },
    /// Each instance on a prefix: applied release, gray release, error.
    Rollout {
        /// The prefix.
        prefix: String,
        /// Wait until every instance runs this release (a spinner with the elapsed time
        /// shows on stderr while it waits, if stderr is a terminal and the output is a table).
        /// With no instance on the prefix there is nothing to wait for: exit 3, saying so.
        #[arg(long)]
        wait: Option<u64>,
        /// How long --wait may take (e.g. 30s).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        timeout: Duration,
    },
    /// Gray releases: to some instances first.
    #[command(subcommand)]
    Gray(GrayCommand),
    /// Rollout plans: a gray release that moves itself through steps, bake times and gates,
    /// promoted at the end or aborted on the first failed gate.
    ///
    /// `start`, `drive` and `status --watch` follow the plan live: each line of its log as
    /// it happens, and the current step with how many of the instances it selects run it
    /// and how many are degraded (redrawn on stderr on a terminal; one line per change on a
    /// pipe). They exit 0 once the plan is promoted, 1 with the reason once a gate aborts it
    /// (a rejecting or degraded instance, one too slow to load a step), 4 once it is
    /// cancelled, 6 if the access policy does not let the principal release on the prefix.
    /// Ctrl-C stops driving (exit 1): the plan stays at its step, and `plan drive` resumes
    /// it; it stops `status --watch` with exit 0. With -o json they print the final plan
    /// only.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Propose a change for review instead of releasing it: another principal approves it
    /// (required on a prefix the access policy marks for review).
    Propose(ProposeArgs),
    /// The proposals of a prefix (open and decided); with an ID, that one and its changes.
    Proposals {
        /// The prefix.
        prefix: String,
        /// One proposal to show with its changes.
        id: Option<String>,
    },
    /// Approve a proposal: it is released as proposed (by another principal than its
    /// proposer, holding `approve`).
    Approve {
        /// The prefix.
        prefix: String,
        /// The proposal.
        id: String,
        /// The revision `config proposals PREFIX ID` showed: approve only if the proposal is
        /// still what was reviewed.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Reject a proposal (or withdraw one's own).
    Reject {
        /// The prefix.
        prefix: String,
        /// The proposal.
        id: String,
        /// Why (shown with the proposal).
        #[arg(long)]
        reason: String,
    },
}

/// `coordctl config propose`. `Debug` leaves the values out: they may be secrets.
#[derive(Args)]
pub struct ProposeArgs {
    /// The prefix.
    pub prefix: String,
    /// Relative key and new value: `timeout_secs=45`, `provider=stripe`. VALUE is JSON, or
    /// text for a key the published schema types as a string (or that is not JSON).
    #[arg(value_name = "KEY=VALUE", value_parser = parse_assignment)]
    pub values: Vec<(String, String)>,
    /// Keys (relative) to delete in the same change.
    #[arg(long = "remove")]
    pub remove: Vec<String>,
    /// Why (shown to the reviewer and in history).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Propose a gray release to the instances these flags pick.
    #[command(flatten)]
    pub to: SelectorArgs,
}

impl std::fmt::Debug for ProposeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ProposeArgs {
            prefix,
            values,
            remove,
            message,
            to,
        } = self;
        let keys: Vec<&str> = values.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("ProposeArgs")
            .field("prefix", prefix)
            .field("keys", &keys)
            .field("values", &REDACTED)
            .field("remove", remove)
            .field("message", message)
            .field("to", to)
            .finish()
    }
}

/// Which instances a gray release goes to.
#[derive(Debug, Default, Args)]
pub struct SelectorArgs {
    /// Pick instances with this label (k=v); repeatable, all must match.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Pick this percentage of instances (stable per instance and release).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub percent: Option<u8>,
    /// Pick this instance by name; repeatable.
    #[arg(long = "instance")]
    pub instances: Vec<String>,
}

impl SelectorArgs {
    /// True if no flag picks anything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.percent.is_none() && self.instances.is_empty()
    }
}

/// `coordctl config set`. `Debug` leaves the value out: it may be a secret.
#[derive(Args)]
pub struct SetArgs {
    /// The full key, e.g. /config/checkout/timeout_secs.
    pub key: String,
    /// The value as JSON (`45`, `true`, `'"text"'`, `'{"a":1}'`).
    pub value: String,
    /// Take VALUE as a plain string rather than JSON.
    #[arg(long)]
    pub string: bool,
    /// Write even if the published schema refuses the value, or there is none.
    #[arg(long)]
    pub force: bool,
    /// Show what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write only if the key is still at this version (its mod revision, as `config list`
    /// shows it; 0: must not exist); otherwise exit 4. Only `config set` takes it.
    #[arg(long)]
    pub expect_version: Option<i64>,
    /// Why (shown in history; under a published schema).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
}

impl std::fmt::Debug for SetArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let SetArgs {
            key,
            value: _,
            string,
            force,
            dry_run,
            expect_version,
            message,
        } = self;
        f.debug_struct("SetArgs")
            .field("key", key)
            .field("value", &REDACTED)
            .field("string", string)
            .field("force", force)
            .field("dry_run", dry_run)
            .field("expect_version", expect_version)
            .field("message", message)
            .finish()
    }
}

/// `coordctl config release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The prefix.
    pub prefix: String,
    /// A JSON object: relative key → value.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Why (shown in history).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Keys (relative) to delete in the same release.
    #[arg(long = "remove")]
    pub remove: Vec<String>,
    /// Refuse (exit 4) unless the latest release is still this one (0: none yet).
    #[arg(long)]
    pub expect_latest: Option<u64>,
}

/// `coordctl config gray …`.
#[derive(Debug, Subcommand)]
pub enum GrayCommand {
    /// Release values to the instances a selector picks.
    Start {
        /// The prefix.
        prefix: String,
        /// A JSON object: relative key → value.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Which instances.
        #[command(flatten)]
        to: SelectorArgs,
        /// Why.
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// Make gray release SEQ the values of every instance.
    Promote {
        /// The prefix.
        prefix: String,
        /// The gray release.
        seq: u64,
    },
    /// Drop gray release SEQ: its instances go back to the prefix's values.
    Abort {
        /// The prefix.
        prefix: String,
        /// The gray release.
        seq: u64,
    },
}

/// `coordctl config plan …`: rollout plans (see `coord::rollout`).
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Start the plan a TOML file describes (prefix, message, values, removes, `[[steps]]`
    /// with selector and bake, `[gates]`), then drive it from here until it ends (exit 0
    /// promoted, 1 aborted, 4 cancelled; 4 at once if another plan of the prefix runs).
    Start {
        /// The plan file (TOML; see `coord::rollout::RolloutPlan`).
        file: PathBuf,
        /// Only store the plan (pending); `plan drive` runs it.
        #[arg(long)]
        no_drive: bool,
    },
    /// Drive a prefix's plan from here: a pending one, or one whose driver stopped. Waits
    /// while another driver leads, and takes over if it stops (exit 0 promoted, 1 aborted,
    /// 4 cancelled).
    Drive {
        /// The prefix.
        prefix: String,
    },
    /// The prefix's plan (the running one, or the last): steps with their instances, gates,
    /// state, log.
    Status {
        /// The prefix.
        prefix: String,
        /// Follow it live until it ends (exit codes as `plan drive`).
        #[arg(long)]
        watch: bool,
    },
    /// Hold the plan at its step: its driver judges nothing until `plan resume`.
    Pause {
        /// The prefix.
        prefix: String,
    },
    /// Let a paused plan go on (its step bakes again from the start).
    Resume {
        /// The prefix.
        prefix: String,
    },
    /// End the plan: its gray release is aborted (every instance back on the base values).
    Cancel {
        /// The prefix.
        prefix: String,
        /// Do not ask for confirmation (asked on stderr, answered with a line on stdin).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `coordctl locks …`.
#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Every lock under a prefix: holder key, fencing token, TTL left, waiters in order.
    Ls {
        /// The prefix (default: every key).
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Break a lock: delete its holder's key and revoke its lease (the holder loses it; the
    /// next waiter gets it), recorded in the audit log.
    Release {
        /// The lock name.
        name: String,
        /// Required: breaking a lock is never the default.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (asked on stderr, answered with a line on stdin).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `coordctl ids …`.
#[derive(Debug, Subcommand)]
pub enum IdsCommand {
    /// Taken IDs of a service, with the holder's lease and its TTL left.
    Ls {
        /// The service.
        service: String,
    },
    /// Release an instance ID a stuck process still holds (the ID is free for the next
    /// taker; the holder's guard learns it lost it), recorded in the audit log.
    Release {
        /// The service.
        service: String,
        /// The ID.
        id: u32,
        /// Required: taking an ID from a live holder is never the default.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (asked on stderr, answered with a line on stdin).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `coordctl services …`.
#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Instances of a service, or every service with its instance count.
    Ls {
        /// The service (default: every service).
        name: Option<String>,
    },
    /// Print one line per registration change, until Ctrl-C.
    Watch {
        /// The service.
        name: String,
    },
}

/// `coordctl election …`.
#[derive(Debug, Subcommand)]
pub enum ElectionCommand {
    /// The current leader of an election.
    Leader {
        /// The election name.
        name: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `KEY=VALUE`, the value kept as typed (its JSON is read once the schema is known).
fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_env_flag_names_every_profile_it_accepts_local_included() {
        let command = Cli::command();
        let env = command
            .get_arguments()
            .find(|arg| arg.get_id() == "env")
            .expect("an --env flag");
        let help = env.get_help().expect("--env has help").to_string();
        for profile in ["development", "test", "production", "local"] {
            assert!(help.contains(profile), "{profile} missing from: {help}");
        }
        assert!(help.contains("coord.toml"), "says what local does: {help}");
    }

    #[test]
    fn debug_of_the_connection_shows_no_password() {
        let cli = Cli::try_parse_from([
            "coordctl",
            "--user",
            "root",
            "--password",
            "hunter2-etcd",
            "health",
        ])
        .unwrap();
        for shown in [format!("{:?}", cli.connection), format!("{cli:?}")] {
            assert!(!shown.contains("hunter2-etcd"), "{shown}");
            assert!(shown.contains("root"), "{shown}");
        }
    }

    #[test]
    fn debug_of_config_set_shows_the_key_not_the_value() {
        let cli = Cli::try_parse_from([
            "coordctl",
            "config",
            "set",
            "/config/pay/api_key",
            "\"sk-9\"",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("/config/pay/api_key"), "{shown}");
        assert!(!shown.contains("sk-9"), "{shown}");
    }

    #[test]
    fn a_key_argument_and_the_tls_key_flag_do_not_collide() {
        let cli = Cli::try_parse_from([
            "coordctl", "--cert", "c.pem", "--key", "k.pem", "config", "get", "/a/b",
        ])
        .unwrap();
        assert_eq!(cli.connection.key, Some(PathBuf::from("k.pem")));
        match cli.command {
            Command::Config(ConfigCommand::Get { key }) => assert_eq!(key, "/a/b"),
            other => panic!("parsed as {other:?}"),
        }
    }
}
