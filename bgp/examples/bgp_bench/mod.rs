//! The comparative BGP benchmark's parts; `bgp-bench.rs` holds the method and the command.

pub mod dut;
pub mod report;
pub mod run;
pub mod session;
pub mod workload;
