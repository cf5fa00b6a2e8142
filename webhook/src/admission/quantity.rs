//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`): a syntax
//! check, so a bad `faultline.dev/proxy-cpu` is reported by us, by name,
//! rather than by the API server as an opaque pod validation error, and the
//! value, so overrides can be held within bounds the proxy can run in.

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

/// The value of a quantity in base units (cores, bytes), or why it has none.
/// `f64` is exact enough for comparing against bounds; values beyond its
/// range come out infinite and so above any ceiling.
pub fn value(text: &str) -> Result<f64, String> {
    check(text)?;
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let number: f64 = number
        .parse()
        .map_err(|_| "expected a number such as 100m, 0.5, 64Mi or 1Gi".to_string())?;
    Ok(number * scale(suffix))
}

/// The multiplier of a suffix `check` accepted.
fn scale(suffix: &str) -> f64 {
    let binary = |power: i32| 1024f64.powi(power);
    let decimal = |power: i32| 10f64.powi(power);
    match suffix {
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => 1.0,
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        exponent => {
            let digits = exponent.trim_start_matches(['e', 'E']);
            // Out-of-range exponents saturate: to infinity or to zero.
            let power = digits.parse::<i32>().unwrap_or(if digits.starts_with('-') {
                i32::MIN
            } else {
                i32::MAX
            });
            10f64.powi(power)
        }
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
    use super::{check, value};

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

    #[test]
    fn values_in_base_units() {
        for (text, expected) in [
            ("100m", 0.1),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
            ("1Gi", 1024.0 * 1024.0 * 1024.0),
            ("2e3", 2000.0),
            ("1E-2", 0.01),
            (".5", 0.5),
            ("5.", 5.0),
            ("+1k", 1000.0),
            ("250M", 250e6),
            ("0", 0.0),
        ] {
            let got = value(text).unwrap();
            assert!((got - expected).abs() <= expected * 1e-12, "{text}: {got}");
        }
        assert_eq!(value("1e99999999999"), Ok(f64::INFINITY));
        assert_eq!(value("1e-99999999999"), Ok(0.0));
        assert!(value("lots").is_err());
    }
}
