//! Request inspection, usable offline: normalisation and parsing of a request into values,
//! the YAML rule catalogue, libinjection, anomaly scoring with paranoia levels, and
//! time-boxed exceptions. The proxy calls `Engine::inspect`; `waf-agent rules test FILE`
//! calls it on `parse_raw_request`.

pub mod detect;
pub mod engine;
pub mod exceptions;
pub mod multipart;
pub mod normalize;
pub mod parse;
pub mod request;
pub mod rules;
pub mod sanitize;
pub mod timestamp;
pub mod transforms;
pub mod uploads;

pub use engine::{Engine, Inspection, Match, Verdict};
pub use request::{parse_raw_request, ParseError, RequestView};
pub use rules::{Action, Category, RulesError};

#[cfg(test)]
mod tests;
