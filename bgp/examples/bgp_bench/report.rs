//! The result table, with every daemon compared to BIRD.

use std::fmt::Write as _;

use super::dut::DutKind;
use super::run::Measurement;

/// One daemon's line of the table.
#[derive(Debug)]
pub struct Row {
    pub kind: DutKind,
    pub version: String,
    pub prefixes: u32,
    pub paths: u32,
    /// 1-minute load average just before the run, as other work may share the CPUs.
    pub load_before: f64,
    pub outcome: Result<Measurement, String>,
}

impl Row {
    fn seconds_per_prefix(&self) -> Option<f64> {
        let m = self.outcome.as_ref().ok()?;
        Some(m.elapsed.as_secs_f64() / f64::from(self.prefixes))
    }
}

/// Renders the table. Time ratios compare time per prefix, so a daemon run on a smaller table
/// (GoBGP) is still compared fairly; memory ratios across different table sizes are marked
/// with `*`.
pub fn render(rows: &[Row]) -> String {
    let bird = rows
        .iter()
        .find(|r| r.kind == DutKind::Bird && r.outcome.is_ok());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<13} {:>9} {:>7} {:>9} {:>8} {:>11} {:>10} {:>10} {:>9} {:>5}  notes",
        "daemon",
        "version",
        "prefixes",
        "paths",
        "time (s)",
        "CPU (s)",
        "prefixes/s",
        "RSS (MiB)",
        "time/BIRD",
        "mem/BIRD",
        "load"
    );
    for r in rows {
        match &r.outcome {
            Ok(m) => {
                let secs = m.elapsed.as_secs_f64();
                let rate = f64::from(r.prefixes) / secs.max(1e-9);
                let (tr, mr) = match (bird, r.seconds_per_prefix()) {
                    (Some(b), Some(spp)) => {
                        let bspp = b.seconds_per_prefix().unwrap_or(f64::NAN);
                        let bm = b
                            .outcome
                            .as_ref()
                            .map(|m| m.peak_rss_mib)
                            .unwrap_or(f64::NAN);
                        let star = if b.prefixes == r.prefixes { "" } else { "*" };
                        (
                            format!("{:.2}", spp / bspp),
                            format!("{:.2}{star}", m.peak_rss_mib / bm),
                        )
                    }
                    _ => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    out,
                    "{:<6} {:<13} {:>9} {:>7} {:>9.3} {:>8.2} {:>11.0} {:>10.1} {:>10} {:>9} {:>5.2}  {} UPDATEs ({:.1} MiB) received; tester wrote the table in {:.3} s",
                    r.kind.to_string(),
                    r.version,
                    r.prefixes,
                    r.paths,
                    secs,
                    m.cpu.as_secs_f64(),
                    rate,
                    m.peak_rss_mib,
                    tr,
                    mr,
                    r.load_before,
                    m.updates_received,
                    m.octets_received as f64 / f64::from(1u32 << 20),
                    m.write_time.as_secs_f64(),
                );
            }
            Err(why) => {
                let _ = writeln!(
                    out,
                    "{:<6} {:<13} {:>9} {:>7} {:>9} {:>8} {:>11} {:>10} {:>10} {:>9} {:>5.2}  FAILED: {why}",
                    r.kind.to_string(),
                    r.version,
                    r.prefixes,
                    r.paths,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    r.load_before,
                );
            }
        }
    }
    if rows.iter().any(|r| r.outcome.is_ok()) {
        out += "time: first UPDATE sent to last prefix received; CPU: the daemon's user+system \
                time over that span; time/BIRD compares time per prefix (lower is faster); \
                mem/BIRD compares peak RSS (VmHWM), `*` where the table sizes differ; load: \
                1-minute load average before the run.\n";
    }
    out
}
