//! Values out of Prometheus text, as `/metrics` serves it.

/// The value of one series, written exactly as it appears before the
/// value (`name` or `name{label="v",...}`); 0 when absent.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The sum of every sample of `metric` (exact name, any labels) whose
/// series contains `label` (e.g. `kind="delay"`), if given.
pub fn sum(text: &str, metric: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if name != metric || label.is_some_and(|want| !series.contains(want)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP faultline_requests Requests.
# TYPE faultline_requests counter
faultline_requests_total{direction=\"inbound\",protocol=\"http1\"} 3
faultline_requests_total{direction=\"outbound\",protocol=\"http1\"} 4
faultline_requests_total_other 9
faultline_policy_connected 1
";

    #[test]
    fn one_series_or_the_sum_of_a_metric() {
        assert_eq!(value(TEXT, "faultline_policy_connected"), 1.0);
        assert_eq!(
            value(
                TEXT,
                "faultline_requests_total{direction=\"outbound\",protocol=\"http1\"}"
            ),
            4.0
        );
        assert_eq!(value(TEXT, "faultline_missing"), 0.0);
        assert_eq!(sum(TEXT, "faultline_missing", None), 0.0);
        assert_eq!(sum(TEXT, "faultline_requests_total", None), 7.0);
        assert_eq!(
            sum(
                TEXT,
                "faultline_requests_total",
                Some("direction=\"inbound\"")
            ),
            3.0
        );
    }
}
