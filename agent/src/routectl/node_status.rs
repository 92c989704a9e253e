//! `routectl node status`: routerd's own report ([`NodeStatus`], from its control socket) in
//! the layout of `calicoctl node status`, followed by what calicoctl never showed.
//!
//! `routerd process is running.` and the daemon's facts (state, uptime, AS, router ID,
//! blocks, FIB) come first. Then calicoctl's part, in its exact layout so that scripts
//! grepping it keep working: per address family `IPv4 BGP status` and a boxed table
//! `PEER ADDRESS | PEER TYPE | STATE | SINCE | INFO` (STATE is BIRD's protocol state `up` /
//! `start`, SINCE BIRD's time of the last state change: `HH:MM:SS` within a day, else the
//! date; INFO the FSM state and the last error), or `No IPv6 peers found.`. A peer belongs to
//! the family of its address, as calicoctl asked `bird` and `bird6` separately.
//!
//! Last, per family, what calicoctl never showed: each session's name, prefix counters and
//! last error.
//!
//! Times are formatted against a `now` passed in, so the output is a pure function of its
//! inputs (golden tests use a fixed clock).

use std::net::IpAddr;

use crate::status::{NodeStatus, SessionStatus};

use super::table::boxed_table;

/// What `node status` prints (on stderr, exit status 1) when routerd's socket does not answer,
/// as calicoctl says `Calico process is not running.`.
pub const NOT_RUNNING: &str = "routerd process is not running.";

const DAY: u64 = 86_400;

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The SINCE column: the UTC time of day of `since_unix` when it is less than a day before
/// `now_unix` (or in the future, a skewed clock), else its date; `-` when unknown (0).
pub fn format_since(since_unix: u64, now_unix: u64) -> String {
    if since_unix == 0 {
        return "-".into();
    }
    if now_unix.saturating_sub(since_unix) < DAY {
        let s = since_unix % DAY;
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        let (y, m, d) = civil_from_days((since_unix / DAY) as i64);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// An uptime as `HH:MM:SS`, with a day count in front past a day (`3d 04:05:06`).
pub fn format_uptime(secs: u64) -> String {
    let hms = format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    );
    match secs / DAY {
        0 => hms,
        days => format!("{days}d {hms}"),
    }
}

fn is_family(session: &SessionStatus, v6: bool) -> bool {
    matches!(session.address, IpAddr::V6(_)) == v6
}

fn family_tables(
    out: &mut String,
    status: &NodeStatus,
    title: &str,
    headings: &[&str],
    rows_of: impl Fn(&SessionStatus) -> Vec<Vec<String>>,
) {
    for (v6, family) in [(false, "IPv4"), (true, "IPv6")] {
        out.push_str(&format!("\n{family} {title}\n"));
        let rows: Vec<Vec<String>> = status
            .sessions
            .iter()
            .filter(|s| is_family(s, v6))
            .flat_map(&rows_of)
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
        } else {
            out.push_str(&boxed_table(headings, &rows));
        }
    }
}

/// The BFD column: `-` without BFD, the state, and why it last went down when not Up
/// (RFC 5880's diagnostic, as `birdc show bfd sessions` lists it).
fn bfd_cell(s: &SessionStatus) -> String {
    match &s.bfd {
        None => "-".into(),
        Some(b) if b.state == "Up" => "Up".into(),
        Some(b) => match (&b.error, b.diag.as_str()) {
            (Some(e), _) => format!("{} ({e})", b.state),
            (None, "No Diagnostic") => b.state.clone(),
            (None, diag) => format!("{} ({diag})", b.state),
        },
    }
}

/// A session's rows of the sessions table: one per family in use, as BIRD prints a
/// "Routes:" line per channel (the address, name and error on the first only); a session
/// that is down has one row with its totals (zero) and `-` as family.
fn session_rows(s: &SessionStatus) -> Vec<Vec<String>> {
    let counts: Vec<(String, u64, u64, u64)> = if s.family_prefixes.is_empty() {
        vec![(
            "-".into(),
            s.prefixes_received,
            s.prefixes_accepted,
            s.prefixes_advertised,
        )]
    } else {
        s.family_prefixes
            .iter()
            .map(|f| (f.family.clone(), f.received, f.accepted, f.advertised))
            .collect()
    };
    counts
        .into_iter()
        .enumerate()
        .map(|(i, (family, received, accepted, advertised))| {
            let first = i == 0;
            vec![
                if first {
                    s.address.to_string()
                } else {
                    String::new()
                },
                if first { s.name.clone() } else { String::new() },
                family,
                received.to_string(),
                accepted.to_string(),
                advertised.to_string(),
                if first { bfd_cell(s) } else { String::new() },
                if first {
                    s.last_error.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            ]
        })
        .collect()
}

/// The whole report for `status`, with times relative to `now_unix`.
pub fn format_node_status(status: &NodeStatus, now_unix: u64) -> String {
    let mut out = String::from("routerd process is running.\n");
    let mut facts: Vec<(&str, String)> = vec![
        ("Node", status.node.clone()),
        ("Version", status.version.clone()),
        ("State", status.state.as_str().to_string()),
        ("Uptime", format_uptime(status.uptime_secs)),
        ("AS number", status.as_number.to_string()),
        ("Router ID", status.router_id.to_string()),
    ];
    if let Some(id) = status.cluster_id {
        facts.push(("Cluster ID", format!("{id} (route reflector)")));
    }
    facts.push((
        "Blocks",
        if status.blocks.is_empty() {
            "none".into()
        } else {
            status.blocks.join(", ")
        },
    ));
    let fib = &status.fib;
    let mut fib_text = format!(
        "{} routes, {}, {} errors",
        fib.routes,
        if fib.in_sync {
            "in sync"
        } else {
            "not in sync"
        },
        fib.errors
    );
    if let Some(ms) = fib.last_reconcile_ms {
        fib_text.push_str(&format!(", last reconcile {ms} ms"));
    }
    facts.push(("FIB", fib_text));
    let ds = &status.datastore;
    if !ds.address.is_empty() {
        let state = if ds.reachable {
            "reachable".to_string()
        } else {
            format!(
                "UNREACHABLE since {}: {}",
                format_since(ds.since_unix, now_unix),
                ds.last_error.as_deref().unwrap_or("no answer")
            )
        };
        facts.push(("Datastore", format!("{} ({state})", ds.address)));
    }
    let label_width = facts.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in facts {
        out.push_str(&format!(
            "  {:<label_width$} {value}\n",
            format!("{label}:")
        ));
    }

    family_tables(
        &mut out,
        status,
        "BGP status",
        &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
        |s| {
            vec![vec![
                s.address.to_string(),
                s.peer_type.as_str().to_string(),
                s.bird_state().to_string(),
                format_since(s.since_unix, now_unix),
                s.info(),
            ]]
        },
    );

    family_tables(
        &mut out,
        status,
        "BGP sessions",
        &[
            "PEER ADDRESS",
            "NAME",
            "FAMILY",
            "RECEIVED",
            "ACCEPTED",
            "ADVERTISED",
            "BFD",
            "LAST ERROR",
        ],
        session_rows,
    );
    // calicoctl ends its report with an empty line.
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_within_a_day_else_a_date() {
        // 2026-11-22 07:56:25 UTC.
        let now = 1_795_334_185;
        assert_eq!(format_since(now - 60, now), "07:55:25");
        assert_eq!(format_since(now - DAY + 1, now), "07:56:26");
        assert_eq!(format_since(now - DAY, now), "2026-11-21");
        assert_eq!(format_since(1_704_164_645, now), "2024-01-02");
        assert_eq!(format_since(now + 5, now), "07:56:30");
        assert_eq!(format_since(0, now), "-");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn uptime() {
        assert_eq!(format_uptime(0), "00:00:00");
        assert_eq!(format_uptime(3_723), "01:02:03");
        assert_eq!(
            format_uptime(3 * DAY + 4 * 3600 + 5 * 60 + 6),
            "3d 04:05:06"
        );
    }
}
