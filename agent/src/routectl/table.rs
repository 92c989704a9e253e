//! The two table layouts calicoctl prints, reproduced exactly so that scripts and eyes used to
//! calicoctl's output keep working.
//!
//! - [`column_table`]: `calicoctl get` (Go `text/tabwriter` with minimum width 5, padding 3,
//!   every cell tab-terminated, so every column, the last included, is padded; then one empty
//!   line after the table).
//! - [`boxed_table`]: `calicoctl node status` and `calicoctl ipam show` (the `tablewriter`
//!   library's default style: `+---+` borders, headers centred, numbers right-aligned, other
//!   cells left-aligned, cells wider than 30 columns wrapped on word boundaries with the
//!   minimum-raggedness rule).
//!
//! Widths count characters, not bytes (all our cells are ASCII or single-width text).

/// `text/tabwriter`'s minimum cell width as calicoctl configures it.
const TAB_MIN_WIDTH: usize = 5;
/// `text/tabwriter`'s padding as calicoctl configures it.
const TAB_PADDING: usize = 3;
/// `tablewriter`'s default maximum column width before wrapping.
const BOX_WRAP_WIDTH: usize = 30;
/// Penalty for a wrapped line longer than the limit (a single over-long word), as
/// `tablewriter`'s `WrapWords`.
const OVERLONG_PENALTY: usize = 100_000;

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad_right(s: &str, w: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(s))));
    out
}

fn pad_left(s: &str, w: usize) -> String {
    let mut out: String = std::iter::repeat_n(' ', w.saturating_sub(width(s))).collect();
    out.push_str(s);
    out
}

/// Centres `s` in `w` columns; an odd gap puts the extra space on the right.
fn pad_center(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(s));
    let left = gap / 2;
    let mut out: String = std::iter::repeat_n(' ', left).collect();
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', gap - left));
    out
}

/// A `calicoctl get` table: headings, then one row per resource, every column padded to its
/// widest cell plus 3 (at least 5), then an empty line.
pub fn column_table(headings: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headings.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = std::iter::once(width(headings[c]))
                .chain(rows.iter().map(|r| r.get(c).map_or(0, |s| width(s))))
                .max()
                .unwrap_or(0);
            (widest + TAB_PADDING).max(TAB_MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        for (cell, w) in cells.zip(&widths) {
            out.push_str(&pad_right(cell, *w));
        }
        out.push('\n');
    };
    line(&mut headings.iter().copied());
    for row in rows {
        line(&mut (0..columns).map(|c| row.get(c).map_or("", String::as_str)));
    }
    out.push('\n');
    out
}

/// True for cells `tablewriter` right-aligns: plain decimal numbers (`65536`, `-1`, `1,024`,
/// `0.5`).
fn is_decimal(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if int.is_empty() {
        return false;
    }
    if int.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    // Thousands groups: 1-3 digits, then ",ddd" groups.
    let mut groups = int.split(',');
    let first = groups.next().unwrap_or("");
    (1..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_digit())
        && groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Splits `text` into lines of at most `limit` columns on spaces, minimising the sum of
/// squared trailing gaps of all lines but the last (Knuth-style minimum raggedness, as
/// `tablewriter.WrapString`). A word longer than `limit` raises the limit to its length.
pub fn wrap_words(text: &str, limit: usize) -> Vec<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let limit = words.iter().map(|w| width(w)).max().unwrap_or(0).max(limit);
    let n = words.len();
    // length(i, j): width of words i..=j joined by single spaces.
    let mut prefix = vec![0usize; n + 1];
    for (i, w) in words.iter().enumerate() {
        prefix[i + 1] = prefix[i] + width(w);
    }
    let length = |i: usize, j: usize| prefix[j + 1] - prefix[i] + (j - i);
    let mut cost = vec![usize::MAX; n + 1];
    let mut next_break = vec![n; n];
    cost[n] = 0;
    for i in (0..n).rev() {
        if length(i, n - 1) <= limit {
            cost[i] = 0;
            next_break[i] = n;
            continue;
        }
        for j in i + 1..n {
            let len = length(i, j - 1);
            let gap = limit.abs_diff(len);
            let mut c = gap.saturating_mul(gap).saturating_add(cost[j]);
            if len > limit {
                c = c.saturating_add(OVERLONG_PENALTY);
            }
            if c < cost[i] {
                cost[i] = c;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        let j = next_break[i].max(i + 1);
        lines.push(words[i..j].join(" "));
        i = j;
    }
    lines
}

/// The lines of one cell as `tablewriter` lays them out, and the width they need.
fn cell_lines(text: &str) -> (Vec<String>, usize) {
    let raw: Vec<&str> = text.split('\n').collect();
    let natural = raw.iter().map(|l| width(l)).max().unwrap_or(0);
    let limit = natural.min(BOX_WRAP_WIDTH);
    let mut lines = Vec::new();
    let mut widest = limit;
    for para in raw {
        for line in wrap_words(para, limit) {
            widest = widest.max(width(&line));
            lines.push(line);
        }
    }
    (lines, widest)
}

/// A `tablewriter` table with a header row.
pub fn boxed_table(headings: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headings.len();
    let header: Vec<(Vec<String>, usize)> = headings.iter().map(|h| cell_lines(h)).collect();
    let body: Vec<Vec<(Vec<String>, usize)>> = rows
        .iter()
        .map(|r| {
            (0..columns)
                .map(|c| cell_lines(r.get(c).map_or("", String::as_str)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            std::iter::once(header[c].1)
                .chain(body.iter().map(|r| r[c].1))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.extend(std::iter::repeat_n('-', w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = border.clone();
    render_row(&mut out, &header, &widths, true);
    out.push_str(&border);
    for row in &body {
        render_row(&mut out, row, &widths, false);
    }
    out.push_str(&border);
    out
}

fn render_row(out: &mut String, cells: &[(Vec<String>, usize)], widths: &[usize], header: bool) {
    let height = cells.iter().map(|c| c.0.len()).max().unwrap_or(1).max(1);
    for line in 0..height {
        out.push('|');
        for (cell, w) in cells.iter().zip(widths) {
            let text = cell.0.get(line).map_or("", String::as_str);
            let padded = if header {
                pad_center(text, *w)
            } else if is_decimal(text) {
                pad_left(text, *w)
            } else {
                pad_right(text, *w)
            };
            out.push(' ');
            out.push_str(&padded);
            out.push_str(" |");
        }
        out.push('\n');
    }
}

/// Go's `fmt.Sprintf("%.5g", v)`: five significant digits, trailing zeros removed,
/// exponent form (`1.2089e+24`) below 1e-4 or from 1e5 on. `ipam show` prints its counts so.
pub fn format_g5(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let sci = format!("{v:.4e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    if !(-4..5).contains(&exp) {
        let m = trim_fraction(&mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (4 - exp).max(0) as usize;
        trim_fraction(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_table_pads_every_column_like_tabwriter() {
        let t = column_table(
            &["NAME", "ASN"],
            &[
                vec!["node-1".into(), "(64512)".into()],
                vec!["n2".into(), "65001".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME     ASN       \nnode-1   (64512)   \nn2       65001     \n\n"
        );
        // Minimum width 5 for short or empty columns.
        assert_eq!(
            column_table(&["A", "B"], &[vec!["".into(), "x".into()]]),
            "A    B    \n     x    \n\n"
        );
    }

    #[test]
    fn boxed_table_matches_calicoctl_node_status() {
        let t = boxed_table(
            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            &[vec![
                "172.17.8.102".into(),
                "node-to-node mesh".into(),
                "up".into(),
                "23:30:04".into(),
                "Established".into(),
            ]],
        );
        let expected = "\
+--------------+-------------------+-------+----------+-------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+--------------+-------------------+-------+----------+-------------+
| 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |
+--------------+-------------------+-------+----------+-------------+
";
        assert_eq!(t, expected);
    }

    #[test]
    fn boxed_table_wraps_long_cells_at_30_columns() {
        let t = boxed_table(
            &["PEER ADDRESS", "INFO"],
            &[vec![
                "192.168.63.204".into(),
                "Active Socket: Connection refused".into(),
            ]],
        );
        let expected = "\
+----------------+--------------------------------+
|  PEER ADDRESS  |              INFO              |
+----------------+--------------------------------+
| 192.168.63.204 | Active Socket: Connection      |
|                | refused                        |
+----------------+--------------------------------+
";
        assert_eq!(t, expected);
    }

    #[test]
    fn numbers_are_right_aligned() {
        assert!(is_decimal("65536"));
        assert!(is_decimal("1,024"));
        assert!(is_decimal("-3.5"));
        assert!(!is_decimal("10.0.0.1"));
        assert!(!is_decimal("5 (0%)"));
        assert!(!is_decimal("1.0486e+06"));
        assert!(!is_decimal(""));
    }

    #[test]
    fn wrapping_minimises_raggedness() {
        assert_eq!(
            wrap_words("Active Socket: Connection refused", 30),
            vec!["Active Socket: Connection", "refused"]
        );
        assert_eq!(wrap_words("short", 30), vec!["short"]);
        let long = "x".repeat(40);
        assert_eq!(
            wrap_words(&format!("a {long} b"), 30),
            vec!["a", &long, "b"]
        );
    }

    #[test]
    fn g5_matches_go() {
        assert_eq!(format_g5(0.0), "0");
        assert_eq!(format_g5(256.0), "256");
        assert_eq!(format_g5(65536.0), "65536");
        assert_eq!(format_g5(65531.0), "65531");
        assert_eq!(format_g5(1048576.0), "1.0486e+06");
        assert_eq!(format_g5(100000.0), "1e+05");
        assert_eq!(format_g5(1.2089258196146292e24), "1.2089e+24");
        assert_eq!(format_g5(0.5), "0.5");
        assert_eq!(format_g5(99999.0), "99999");
        assert_eq!(format_g5(999995.0), "1e+06");
    }
}
