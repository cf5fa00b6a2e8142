//! Aligned columns, like kubectl's own tables.

/// Render rows (the first is the header) with two spaces between columns.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                let pad = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<pad$}  "));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let rows = vec![
            vec!["NAME".into(), "V".into()],
            vec!["checkout-abc".into(), "1".into()],
        ];
        assert_eq!(super::render(&rows), "NAME          V\ncheckout-abc  1\n");
    }
}
