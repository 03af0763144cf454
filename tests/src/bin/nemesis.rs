//! The nemesis runner: `cargo run -p coord-tests --release --bin nemesis -- --duration 60s
//! --seed 42`. Starts a 3-member etcd, runs the workloads through fault proxies while the
//! seeded schedule injects faults, heals, checks, prints the report, and exits non-zero if the
//! run did not pass (1: an invariant was violated, a fault failed to inject, or the fences
//! were never seen to refuse) or could not be carried out (2). `--unfenced` runs a broken
//! build whose lock and ID writes skip their fences: it must exit 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use coord_tests::nemesis::faults::Schedule;
use coord_tests::nemesis::runner::{self, Options};

const USAGE: &str =
    "usage: nemesis [--duration 60s] [--seed 42] [--clients 3] [--locks 2] [--unfenced] [--schedule] [--history FILE]

  --duration  how long faults are injected (humantime: 90s, 5m, 1h)
  --seed      the fault schedule's seed: the same seed replays the same faults
  --clients   how many clients, each behind its own proxies (at least 1)
  --locks     how many locks (and counters) the workload contends for (at least 1)
  --unfenced  a broken build: lock and ID writes skip their fences (the run must fail)
  --schedule  print the fault schedule of this seed and duration, and run nothing
  --history   write every recorded operation and fault to FILE, one line each

Set RUST_LOG (e.g. RUST_LOG=coord=warn) to see coord's logs.";

/// What the command line asks for.
struct Command {
    options: Options,
    /// Only print the schedule.
    schedule_only: bool,
    /// Where to write the history.
    history: Option<std::path::PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut schedule_only = false;
    let mut history = None;
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--schedule" {
            schedule_only = true;
            continue;
        }
        if flag == "--unfenced" {
            options = options.unfenced();
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (flag.clone(), None),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{name} needs a value")),
        };
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{name}: `{value}` is not a whole number"))
        };
        match name.as_str() {
            "--duration" => {
                options.duration = humantime::parse_duration(&value)
                    .map_err(|e| format!("--duration: `{value}`: {e}"))?;
            }
            "--seed" => options.seed = number(&value)?,
            "--history" => history = Some(value.into()),
            "--clients" => options.clients = usize::try_from(number(&value)?.max(1)).unwrap_or(1),
            "--locks" => {
                options.workload.locks = usize::try_from(number(&value)?.max(1)).unwrap_or(1);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if options.duration < Duration::from_secs(1) {
        return Err("--duration: at least 1s".into());
    }
    Ok(Command {
        options,
        schedule_only,
        history,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let (options, history_file) = match parse(std::env::args().skip(1)) {
        Ok(Command {
            options,
            schedule_only: true,
            ..
        }) => {
            let schedule = Schedule::generate(
                options.seed,
                options.duration,
                options.clients,
                runner::MEMBERS,
            );
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = write!(std::io::stdout().lock(), "{schedule}");
            return ExitCode::SUCCESS;
        }
        Ok(Command {
            options, history, ..
        }) => (options, history),
        Err(message) => {
            if !message.is_empty() {
                eprintln!("nemesis: {message}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match runner::run(options).await {
        Ok(report) => {
            print!("{report}");
            if let Some(path) = history_file {
                if let Err(e) = std::fs::write(&path, report.history.dump()) {
                    eprintln!("nemesis: cannot write {}: {e}", path.display());
                }
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nemesis: the run could not be carried out: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> impl Iterator<Item = String> + '_ {
        line.split_whitespace().map(str::to_owned)
    }

    #[test]
    fn duration_and_seed_are_read() {
        let command = parse(args("--duration 5m --seed 7 --clients=4")).unwrap();
        assert!(!command.schedule_only);
        let options = command.options;
        assert_eq!(options.duration, Duration::from_secs(300));
        assert_eq!(options.seed, 7);
        assert_eq!(options.clients, 4);
    }

    #[test]
    fn unfenced_turns_both_fences_off() {
        let options = parse(args("--unfenced --seed 3")).unwrap().options;
        assert!(!options.workload.fenced && !options.ids.fenced);
        let fenced = parse(args("--seed 3")).unwrap().options;
        assert!(fenced.workload.fenced && fenced.ids.fenced);
    }

    #[test]
    fn schedule_asks_for_the_schedule_only() {
        assert!(parse(args("--seed 7 --schedule")).unwrap().schedule_only);
    }

    #[test]
    fn a_bad_flag_or_value_is_an_error() {
        assert!(parse(args("--duration soon")).is_err());
        assert!(parse(args("--seed")).is_err());
        assert!(parse(args("--speed 3")).is_err());
    }
}
