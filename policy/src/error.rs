//! Errors of `parse`: every message says where (rule index and name, then
//! the field path inside the rule) and what is wrong, e.g.
//! `rules[1] "payments-down": abort.status: 700 is not an HTTP status (100-599)`.
use std::fmt;

#[cfg(test)]
mod tests;

/// Why a policy document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not YAML/JSON at all (or not a mapping). `message`
    /// already mentions the position; `location` has it as numbers.
    #[error("failed to parse policy: {message}")]
    Syntax { message: String, location: Location },
    /// The document is well-formed but a field is wrong.
    #[error("{0}")]
    Invalid(FieldError),
}

impl PolicyError {
    pub(crate) fn at(
        rule: Option<RuleRef>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid(FieldError {
            rule,
            field: field.into(),
            message: message.into(),
        })
    }

    /// The field error, if this is a validation error.
    pub fn field_error(&self) -> Option<&FieldError> {
        match self {
            Self::Invalid(e) => Some(e),
            Self::Syntax { .. } => None,
        }
    }
}

/// Line and column (1-based) of a syntax error, if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

/// Which rule an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub name: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "rules[{}] {:?}", self.index, n),
            None => write!(f, "rules[{}]", self.index),
        }
    }
}

/// A validation error: rule (if any), field path inside the rule (or the
/// document), and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub rule: Option<RuleRef>,
    /// Dotted path such as `abort.status` or `match.headers.x-user`;
    /// empty when the error is about the rule (or document) as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(r) = &self.rule {
            write!(f, "{r}")?;
            sep = ": ";
        }
        if !self.field.is_empty() {
            write!(f, "{sep}{}", self.field)?;
            sep = ": ";
        }
        write!(f, "{sep}{}", self.message)
    }
}

/// An error and its causes on one line, as every faultline binary prints
/// them: "failed to x: failed to y: cause". A cause whose text the line
/// already holds (a message that quotes its source) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
