//! How `parse` reports problems found while reading the document: YAML
//! syntax errors keep libyaml's positions; serde errors become field
//! errors naming the rule (index and name) and the path inside it, in the
//! language's own words, never echoing long values back.
use crate::error::{Location, PolicyError, RuleRef};
use crate::model::Policy;
use crate::validate::validate;

#[cfg(test)]
pub(crate) mod tests;

/// Largest policy accepted: 256 KiB. Kubernetes refuses an object whose
/// annotations add up to more than 256 KiB, so no stored policy is larger;
/// the cap keeps what one parse may cost (a YAML document takes dozens of
/// times its size while it is parsed) within the webhook's memory budget.
pub const MAX_POLICY_BYTES: usize = 256 << 10;

/// Parses a policy written in YAML or JSON and validates every field.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(syntax(format!(
            "the document is larger than {MAX_POLICY_BYTES} bytes"
        )));
    }
    if text.trim().is_empty() {
        return Err(syntax(
            "the document is empty (write `rules: []` for no faults)".into(),
        ));
    }
    // YAML syntax first, so a syntax error is reported as such (with its
    // position) rather than as a problem of whatever field it broke.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax_error(&e))?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let policy: Policy =
        serde_path_to_error::deserialize(deserializer).map_err(|e| deserialize_error(&doc, e))?;
    validate(&policy)?;
    Ok(policy)
}

fn syntax_error(e: &serde_yaml::Error) -> PolicyError {
    PolicyError::Syntax {
        message: shorten_quotes(&e.to_string()),
        location: location_of(e),
    }
}

fn syntax(message: String) -> PolicyError {
    PolicyError::Syntax {
        message,
        location: Location::default(),
    }
}

fn location_of(e: &serde_yaml::Error) -> Location {
    e.location().map_or_else(Location::default, |l| Location {
        line: Some(l.line()),
        column: Some(l.column()),
    })
}

/// Turns serde's error into one that names the rule (with its name, looked
/// up in the document) and the field path inside the rule.
fn deserialize_error(
    doc: &serde_yaml::Value,
    err: serde_path_to_error::Error<serde_yaml::Error>,
) -> PolicyError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let location = location_of(&inner);
    let mut message = inner.to_string();
    // serde_yaml appends " at line L column C" and prefixes its own copy
    // of (a parent of) the path; we report both in our own form.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if let Some((head, rest)) = message.split_once(": ") {
        let is_path_prefix = path == head
            || path.starts_with(&format!("{head}."))
            || path.starts_with(&format!("{head}["));
        if is_path_prefix {
            message = rest.to_owned();
        }
    }
    let message = friendlier(&shorten_quotes(&message));
    if path == "." || path.is_empty() {
        return PolicyError::Syntax {
            message: format!("{message}{location}"),
            location,
        };
    }
    let (rule, field) = split_rule_path(&path);
    let rule = rule.map(|index| RuleRef {
        index,
        name: doc
            .get("rules")
            .and_then(|r| r.get(index))
            .and_then(|r| r.get("name"))
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned),
    });
    PolicyError::at(rule, field, format!("{message}{location}"))
}

/// Rewrites serde's wording in the terms of the fault language.
fn friendlier(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        if let Some(near) = candidates
            .iter()
            .filter(|c| edit_distance(field, c) <= 2)
            .min_by_key(|c| edit_distance(field, c))
        {
            return format!("unknown field (did you mean `{near}`?)");
        }
        if candidates.is_empty() {
            return "unknown field".into();
        }
        return format!("unknown field (expected one of {})", candidates.join(", "));
    }
    if let Some((head, _)) = message.split_once("expected struct ") {
        return format!("{head}expected a mapping");
    }
    message.to_owned()
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// `rules[3].abort.status` -> (Some(3), "abort.status").
fn split_rule_path(path: &str) -> (Option<usize>, String) {
    let Some(rest) = path.strip_prefix("rules[") else {
        return (None, path.to_owned());
    };
    let Some((index, field)) = rest.split_once(']') else {
        return (None, path.to_owned());
    };
    match index.parse() {
        Ok(i) => (Some(i), field.trim_start_matches('.').to_owned()),
        Err(_) => (None, path.to_owned()),
    }
}

/// Shortens long quoted values inside serde messages (`invalid type:
/// string "..."`) so an error never repeats a whole document.
fn shorten_quotes(message: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::with_capacity(message.len().min(256));
    let mut inside = false;
    let mut run = 0usize;
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && inside {
            if run < MAX {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                chars.next();
            }
            run += 1;
            continue;
        }
        if c == '"' {
            if inside && run > MAX {
                out.push_str("...");
            }
            inside = !inside;
            run = 0;
            out.push(c);
            continue;
        }
        if inside {
            run += 1;
            if run > MAX {
                continue;
            }
        }
        out.push(c);
    }
    out
}
