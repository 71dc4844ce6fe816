//! Fixed-width text tables for the command line (`status`, `status
//! --fleet`, `audit query`): each column as wide as its widest cell, in
//! characters, two spaces apart, no trailing blanks. A leaf.

/// The header, then the rows.
pub fn columns<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells.zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in rows {
        push_row(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell_in_characters() {
        let rows = [["ä".repeat(3), "x".into()], ["b".into(), String::new()]];
        assert_eq!(super::columns(&["A", "B"], &rows), "A    B\näää  x\nb\n");
    }
}
