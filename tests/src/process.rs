//! What the benchmarks read of a process they run: CPU time, peak memory, liveness
//! (`proc(5)`), and the machine's load, so that figures are printed with it.

use anyhow::{Context, Result};

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces and
/// parentheses; the fields resume after its last `)`), starting with field 3 (state).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second (`CLK_TCK`), the unit of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .map_or(100.0, |hz| hz as f64)
}

/// CPU time (user + system, all threads) `pid` has used so far, in seconds (fields 14 and 15
/// of `/proc/<pid>/stat`). Unlike wall time it hardly depends on what else runs.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let fields = stat_fields(pid)?;
    // Field 3 (state) is index 0 here, so utime (14) and stime (15) are 11 and 12.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// Whether `pid` runs (exists and is neither a zombie nor dead).
pub fn is_alive(pid: u32) -> bool {
    stat_fields(pid)
        .ok()
        .and_then(|f| f.first().map(|state| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// Peak resident set size of `pid` in MiB (`VmHWM` of `/proc/<pid>/status`).
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_memory_and_is_alive() {
        let pid = std::process::id();
        let busy: u64 = (0..2_000_000u64).map(|i| i ^ (i >> 3)).sum();
        assert!(busy > 0);
        assert!(cpu_seconds(pid).is_ok_and(|s| s >= 0.0));
        assert!(peak_rss_mib(pid).is_ok_and(|m| m > 0.5));
        assert!(is_alive(pid));
        assert!(!is_alive(u32::MAX));
    }
}
