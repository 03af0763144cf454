//! Printing: aligned tables for people, JSON for scripts, colour only on a terminal.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::cli::Format;

/// Where and how a command prints.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// Table or JSON.
    pub format: Format,
    color: bool,
}

impl Output {
    /// Output in `format`; colour when stdout is a terminal and `NO_COLOR` is unset.
    pub fn new(format: Format) -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { format, color }
    }

    /// True for `-o json`.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints one JSON document (pretty).
    pub fn json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }

    /// Prints one JSON object on one line (for streams) and flushes.
    pub fn json_line(&self, value: &Value) {
        println!("{value}");
        let _ = std::io::stdout().flush();
    }

    /// Prints a line of text and flushes (for streams).
    pub fn line(&self, text: &str) {
        println!("{text}");
        let _ = std::io::stdout().flush();
    }

    /// Prints rows under a header, each column as wide as its widest cell. A table with no
    /// rows prints only the header. Control characters in a cell are escaped (`\n`, `\u{1b}`):
    /// a cell holds what someone else wrote (an author, a message), and a newline in it
    /// would print a row that is not in the data.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().map(|cell| escape_controls(cell)).collect())
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let head = render(header.iter().map(|s| s.to_string()), &widths);
        if self.color {
            println!("\x1b[1m{head}\x1b[0m");
        } else {
            println!("{head}");
        }
        for row in &rows {
            println!("{}", render(row.iter().cloned(), &widths));
        }
    }

    /// Prints a success note in the table format, nothing in JSON format (the caller prints
    /// the document).
    pub fn note(&self, text: &str) {
        if !self.is_json() {
            if self.color {
                println!("\x1b[32m{text}\x1b[0m");
            } else {
                println!("{text}");
            }
        }
    }
}

fn render(cells: impl Iterator<Item = String>, widths: &[usize]) -> String {
    let cells: Vec<String> = cells.collect();
    let last = cells.len().saturating_sub(1);
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i == last {
            line.push_str(cell);
        } else {
            let pad = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<pad$}  "));
        }
    }
    line.trim_end().to_owned()
}

/// A JSON value as one short cell: strings without quotes would be ambiguous, so values print
/// as compact JSON.
pub fn cell(value: &Value) -> String {
    value.to_string()
}

/// A duration as seconds (`12s`), `-` for none.
pub fn seconds(left: Option<std::time::Duration>) -> String {
    left.map_or_else(|| "-".to_owned(), |d| format!("{}s", d.as_secs()))
}

/// A time as RFC 3339 (UTC, seconds).
pub fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `text` with every control character escaped as Rust writes it (`\n`, `\t`, `\u{1b}`),
/// and nothing else changed.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell_and_the_last_is_not_padded() {
        let widths = [3, 5];
        assert_eq!(
            render(["a".to_owned(), "b".to_owned()].into_iter(), &widths),
            "a    b"
        );
        assert_eq!(
            render(
                ["key".to_owned(), "value".to_owned(), "x".to_owned()].into_iter(),
                &[3, 5, 1]
            ),
            "key  value  x"
        );
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        assert_eq!(escape_controls("ana"), "ana");
        assert_eq!(
            escape_controls("ana\n7  release  mallory  forged"),
            "ana\\n7  release  mallory  forged"
        );
        assert_eq!(escape_controls("a\u{1b}[31mb\tc"), "a\\u{1b}[31mb\\tc");
        assert_eq!(escape_controls("ünï"), "ünï");
    }
}
