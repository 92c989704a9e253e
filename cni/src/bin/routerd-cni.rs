//! `routerd-cni`: the CNI plugin (see `cni::plugin`); `routerd-cni install` installs it.

use clap::Parser;
use rscni_plugin::cni::Plugin;

#[derive(Parser)]
#[command(
    name = "routerd-cni install",
    about = "Install the routerd CNI plugins and conflist"
)]
struct Install {
    #[command(flatten)]
    options: cni::install::InstallOptions,
}

fn main() {
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some("install") {
        let install = Install::parse_from(std::env::args().skip(1));
        match cni::install::install(&install.options) {
            Ok(files) => {
                for f in files {
                    eprintln!("installed {}", f.display());
                }
            }
            Err(e) => {
                eprintln!("routerd-cni install: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let plugin = Plugin::default().msg("routerd-cni: pod networking for routerd");
    if plugin.run(&cni::plugin::RouterdCni).is_err() {
        std::process::exit(1);
    }
}
