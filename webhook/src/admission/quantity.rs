//! Syntax check of Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`),
//! so a bad `faultline.dev/proxy-cpu` is reported by us, by name, rather than
//! by the API server as an opaque pod validation error.

const SUFFIXES: &[&str] = &[
    "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
];

/// `Ok(())` when `value` is a non-negative quantity in Kubernetes' syntax.
pub fn check(value: &str) -> Result<(), String> {
    let digits_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let frac = parts.next();
    let well_formed_number = parts.next().is_none()
        && whole.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()))
        && !(whole.is_empty() && frac.is_none_or(str::is_empty));
    if !well_formed_number {
        return Err("expected a number such as 100m, 0.5, 64Mi or 1Gi".into());
    }
    if SUFFIXES.contains(&suffix) || is_exponent(suffix) {
        Ok(())
    } else {
        Err(format!(
            "unknown unit {suffix:?} (use m, k, M, G, Ki, Mi, Gi, ...)"
        ))
    }
}

fn is_exponent(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_kubernetes_quantities() {
        for ok in [
            "100m", "0.5", "1", "64Mi", "1Gi", "2e3", "1E-2", ".5", "5.", "+1k", "250M",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "m", "lots", "1.2.3", "-1", "10 m", "1mb", "1e", "Mi"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
