//! `routectl`: the operator's CLI (see `agent::routectl`). Parses the command line, runs the
//! command over the process's streams, exits with its status.

use clap::Parser;

fn main() {
    let cli = agent::routectl::Cli::parse();
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let code = agent::routectl::run(
        &cli,
        &mut agent::routectl::Streams {
            stdin: &mut stdin.lock(),
            stdout: &mut stdout.lock(),
            stderr: &mut stderr.lock(),
        },
    );
    std::process::exit(code);
}
