//! What the operator commands print: tables fitted to the terminal, and
//! colour only when a person is reading (a terminal, and `NO_COLOR`
//! unset), so that scripts and files get plain text.

use std::io::IsTerminal;

/// Whether standard output is a terminal that takes colour.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The terminal's width, if standard output is one.
fn width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let env = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    env.or_else(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
}

/// `text` in ANSI `code` (e.g. "1" bold, "31" red, "32" green) when
/// colouring.
pub fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `rows` (the first one the header) in columns as wide as their widest
/// cell; on a terminal narrower than that, the widest columns are cut
/// (`…`) until the table fits, and the header is bold.
pub fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    if let Some(limit) = width() {
        fit(&mut widths, limit);
    }
    let bold = colour();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", cut(c, *w)))
            .collect();
        let line = cells.join("  ");
        let line = line.trim_end();
        out.push_str(&if i == 0 {
            paint(line, "1", bold)
        } else {
            line.to_string()
        });
        out.push('\n');
    }
    out
}

/// Narrow the widest columns (never below 8) until the row, with two
/// spaces between cells, fits `limit`.
fn fit(widths: &mut [usize], limit: usize) {
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    while total(widths) > limit {
        let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w) else {
            return;
        };
        if w <= 8 {
            return;
        }
        widths[i] = w - 1;
    }
}

fn cut(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_string();
    }
    let kept: String = cell.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_columns_give_way_first() {
        let mut w = vec![4, 40, 12];
        fit(&mut w, 40);
        assert_eq!(w, vec![4, 20, 12]);
        let mut tight = vec![10, 10];
        fit(&mut tight, 5);
        assert_eq!(tight, vec![8, 8], "never below 8");
        assert_eq!(cut("abcdefghij", 5), "abcd…");
        assert_eq!(cut("abc", 5), "abc");
    }
}
