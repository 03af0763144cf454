//! A spinner with the elapsed time while a command waits, and a live line of what is going
//! on under the lines of what happened, for people only.
//!
//! They draw on stderr, so stdout holds nothing but the command's answer, and only when
//! stderr is a terminal that can redraw a line (`TERM` set and not `dumb`) and the output is
//! not JSON: a script or a log file sees no spinner frames, carriage returns or escape codes
//! ([`Follow`] prints its live line there as a plain line each time it changes). They clear
//! their line when dropped, before the answer or the error is printed.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Output;

/// How often the spinner turns (and the elapsed time is redrawn).
const TICK: Duration = Duration::from_millis(120);

/// A spinner on stderr while it lives; nothing at all where one is not wanted.
#[must_use = "the spinner clears itself when dropped"]
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    /// Starts a spinner that shows `message` and the time since now, if `out` is for people
    /// and stderr is a terminal.
    pub fn start(out: Output, message: impl Into<String>) -> Self {
        let term = std::env::var("TERM").ok();
        if !wanted(
            out.is_json(),
            std::io::stderr().is_terminal(),
            term.as_deref(),
        ) {
            return Spinner { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        // The template is a constant that parses; the default spinner is only a fallback
        // should a future indicatif read it differently.
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(message.into());
        bar.enable_steady_tick(TICK);
        Spinner { bar: Some(bar) }
    }
}

/// Lines of what happened on stdout, under a live line of what is going on now (a rollout
/// plan's log, and its current step with the instances on it).
///
/// On a terminal the live line is a spinner on stderr, redrawn in place, with a detail that
/// changes by itself (time left); on a pipe each new live line is printed once, without the
/// detail, so a log holds one line per change. With JSON output it prints nothing.
#[must_use = "the live line clears itself when dropped"]
pub struct Follow {
    out: Output,
    bar: Option<ProgressBar>,
    /// The live line last printed (on a pipe) or drawn.
    last: Option<String>,
}

impl Follow {
    /// A view printing through `out`, redrawing its live line if stderr is a terminal.
    pub fn start(out: Output) -> Self {
        let term = std::env::var("TERM").ok();
        let bar = wanted(
            out.is_json(),
            std::io::stderr().is_terminal(),
            term.as_deref(),
        )
        .then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(TICK);
            bar
        });
        Follow {
            out,
            bar,
            last: None,
        }
    }

    /// Prints a line of what happened (stdout), above the live line.
    pub fn line(&self, text: &str) {
        if self.out.is_json() {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| self.out.line(text)),
            None => self.out.line(text),
        }
    }

    /// Prints a warning (stderr), above the live line.
    pub fn warn(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("warning: {text}")),
            None => eprintln!("warning: {text}"),
        }
    }

    /// What is going on now: `now` (printed on a pipe when it changes) and `detail` (only
    /// drawn on a terminal, beside it).
    pub fn now(&mut self, now: &str, detail: &str) {
        if self.out.is_json() {
            return;
        }
        match &self.bar {
            Some(bar) if detail.is_empty() => bar.set_message(now.to_owned()),
            Some(bar) => bar.set_message(format!("{now} ({detail})")),
            None if self.last.as_deref() != Some(now) => {
                self.out.line(&format!("  · {now}"));
            }
            None => {}
        }
        self.last = Some(now.to_owned());
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Spinner {
    // indicatif clears an unfinished bar on drop by default; saying so here keeps the answer
    // that follows from depending on that default.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A spinner only helps a person watching stderr; JSON output is for scripts even when run
/// by hand. Without a `TERM`, or with `dumb`, a terminal may not move back over a line, and
/// every frame would pile up (indicatif hides there too; this says it where it is decided).
fn wanted(json: bool, stderr_is_terminal: bool, term: Option<&str>) -> bool {
    !json && stderr_is_terminal && term.is_some_and(|term| !term.is_empty() && term != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_table_output_to_a_terminal_gets_a_spinner() {
        let xterm = Some("xterm-256color");
        assert!(wanted(false, true, xterm));
        assert!(!wanted(true, true, xterm), "JSON is for scripts");
        assert!(!wanted(false, false, xterm), "stderr is a pipe or a file");
        assert!(!wanted(true, false, xterm));
    }

    #[test]
    fn a_terminal_that_cannot_redraw_a_line_gets_no_spinner() {
        assert!(!wanted(false, true, Some("dumb")));
        assert!(!wanted(false, true, Some("")));
        assert!(!wanted(false, true, None));
    }
}
