//! Printing results as text or JSON, one place for both.

use std::io::Write as _;

use serde::Serialize;

/// Prints `value` as pretty JSON when `json`, else the text `human` renders.
pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => line(&s),
            Err(e) => eprintln!("error: cannot encode output: {e}"),
        }
    } else {
        let text = human(value);
        if !text.is_empty() {
            line(&text);
        }
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn line(s: &str) {
    let _ = writeln!(std::io::stdout(), "{s}");
}
