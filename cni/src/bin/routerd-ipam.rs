//! `routerd-ipam`: the IPAM plugin (see `cni::ipam_plugin`).

use rscni_plugin::cni::Plugin;

fn main() {
    let plugin = Plugin::default().msg("routerd-ipam: addresses from routerd's IPAM blocks");
    if plugin.run(&cni::ipam_plugin::RouterdIpam).is_err() {
        std::process::exit(1);
    }
}
