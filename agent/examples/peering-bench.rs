//! Peer computation benchmark (not a test): a cluster of N nodes in 20 racks, with a per-rack
//! ToR BGPPeer (nodeSelector) and a selector peering between racks; computes the plan of one
//! node, then of every node (what the whole cluster does after one datastore change).
//!
//! `cargo run --release -p agent --no-default-features --example peering-bench [nodes] [mesh]`
//! (defaults 1000 and `on`; `off` uses the automatic route-reflector topology with 3 reflectors).

use std::time::Instant;

use agent::peering::{compute, PeeringInput};
use datastore::resource::{
    AsNumberText, BgpConfiguration, BgpConfigurationSpec, BgpPeer, BgpPeerSpec, Node, NodeBgpSpec,
    NodeSpec, Object,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let mesh = args.next().is_none_or(|a| a != "off");

    let nodes: Vec<Node> = (0..count)
        .map(|i| {
            let mut n = Object::new(
                format!("node-{i:05}"),
                NodeSpec {
                    bgp: Some(NodeBgpSpec {
                        ipv4_address: Some(format!(
                            "10.{}.{}.{}/16",
                            i / 62500,
                            (i / 250) % 250,
                            i % 250 + 1
                        )),
                        ipv6_address: Some(format!("fd00::{:x}/64", i + 1)),
                        route_reflector_cluster_id: (i < 3).then(|| "1.0.0.1".to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            n.metadata
                .labels
                .insert("rack".into(), format!("r{}", i % 20));
            n
        })
        .collect();
    let configs: Vec<BgpConfiguration> = vec![Object::new(
        "default",
        BgpConfigurationSpec {
            node_to_node_mesh_enabled: Some(mesh),
            ..Default::default()
        },
    )];
    let mut peers: Vec<BgpPeer> = (0..20)
        .map(|r| {
            Object::new(
                format!("tor-r{r}"),
                BgpPeerSpec {
                    node_selector: Some(format!("rack == 'r{r}'")),
                    peer_ip: Some(format!("192.168.{r}.1")),
                    as_number: Some(AsNumberText::from(65000 + r)),
                    ..Default::default()
                },
            )
        })
        .collect();
    peers.push(Object::new(
        "rack-mates",
        BgpPeerSpec {
            node_selector: Some("rack in {'r1', 'r2'}".into()),
            peer_selector: Some("rack == 'r3'".into()),
            ..Default::default()
        },
    ));

    fn input<'a>(
        local: &'a str,
        nodes: &'a [Node],
        configs: &'a [BgpConfiguration],
        peers: &'a [BgpPeer],
    ) -> PeeringInput<'a> {
        PeeringInput {
            local_node: local,
            nodes,
            configs,
            peers,
            filters: &[],
        }
    }
    let start = Instant::now();
    let one = compute(&input("node-00003", &nodes, &configs, &peers))?;
    let single = start.elapsed();
    println!(
        "{count} nodes, mesh {}: one plan ({} sessions, {} problems) in {single:?}",
        if mesh { "on" } else { "off" },
        one.sessions.len(),
        one.problems.len()
    );
    let start = Instant::now();
    let mut sessions = 0usize;
    for n in &nodes {
        sessions += compute(&input(&n.metadata.name, &nodes, &configs, &peers))?
            .sessions
            .len();
    }
    let all = start.elapsed();
    println!(
        "every node's plan: {sessions} sessions in {all:?} ({:?} per plan)",
        all / count.max(1)
    );
    Ok(())
}
