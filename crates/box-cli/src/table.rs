//! Aligned text tables for listings (`box ps`, `box images`, `box-runc list`).

use std::io::Write;

/// Writes `rows` (the first is the header) as left-aligned columns separated by `gap` spaces.
pub fn print(rows: &[Vec<String>], gap: usize) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let sep = " ".repeat(gap);
    let mut out = std::io::stdout().lock();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join(&sep).trim_end())?;
    }
    Ok(())
}
