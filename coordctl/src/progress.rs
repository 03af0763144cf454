//! A spinner with the elapsed time while a command waits, for people only.
//!
//! It draws on stderr, so stdout holds nothing but the command's answer, and only when stderr
//! is a terminal and the output is not JSON: a script or a log file sees no spinner frames,
//! carriage returns or escape codes. It clears its line when dropped, before the answer or the
//! error is printed.

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
        if !wanted(out.is_json(), std::io::stderr().is_terminal()) {
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
/// by hand.
fn wanted(json: bool, stderr_is_terminal: bool) -> bool {
    !json && stderr_is_terminal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_table_output_to_a_terminal_gets_a_spinner() {
        assert!(wanted(false, true));
        assert!(!wanted(true, true), "JSON is for scripts");
        assert!(!wanted(false, false), "stderr is a pipe or a file");
        assert!(!wanted(true, false));
    }
}
