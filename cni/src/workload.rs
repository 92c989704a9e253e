//! Who a CNI call is about: the workload's identity from `CNI_ARGS` and `CNI_CONTAINERID`,
//! and the names derived from it, as Calico's plugin derives them
//! (`cni-plugin/internal/pkg/utils`, `libcalico-go/lib/names`).

use datastore::resource::{calico_interface_name, WorkloadEndpointSpec, DEFAULT_NAMESPACE};

/// What identifies one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadId {
    /// `k8s` when the runtime names a pod (`K8S_POD_NAMESPACE` and `K8S_POD_NAME` both set),
    /// else `cni`.
    pub orchestrator: &'static str,
    pub namespace: String,
    /// The pod name (`k8s`), empty otherwise.
    pub pod: String,
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    pub node: String,
}

impl WorkloadId {
    /// From the CNI variables. `cni_args` is `K=V;K=V` (unknown keys are ignored, as Calico
    /// sets `IgnoreUnknown`).
    pub fn new(cni_args: Option<&str>, container_id: &str, ifname: &str, node: &str) -> Self {
        let mut namespace = None;
        let mut pod = None;
        for pair in cni_args.unwrap_or_default().split(';') {
            match pair.split_once('=') {
                Some(("K8S_POD_NAMESPACE", v)) if !v.is_empty() => namespace = Some(v.to_string()),
                Some(("K8S_POD_NAME", v)) if !v.is_empty() => pod = Some(v.to_string()),
                _ => {}
            }
        }
        let (orchestrator, namespace, pod) = match (namespace, pod) {
            (Some(ns), Some(pod)) => ("k8s", ns, pod),
            _ => ("cni", DEFAULT_NAMESPACE.to_string(), String::new()),
        };
        WorkloadId {
            orchestrator,
            namespace,
            pod,
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            node: node.to_string(),
        }
    }

    /// The host side of the veth: `cali` + 11 hex digits of SHA-1 of `<namespace>.<pod>` for
    /// a pod (Calico's `VethNameForWorkload`, so a pod keeps its interface name across
    /// sandboxes), of the container id otherwise. An interface other than `eth0` adds
    /// `.<ifname>` to the hashed text, so a second attachment of the same pod gets a name of
    /// its own (Calico has one attachment per pod).
    pub fn host_veth_name(&self) -> String {
        let mut text = match self.orchestrator {
            "k8s" => format!("{}.{}", self.namespace, self.pod),
            _ => self.container_id.clone(),
        };
        if self.ifname != "eth0" {
            text.push('.');
            text.push_str(&self.ifname);
        }
        calico_interface_name(&text)
    }

    /// The IPAM handle: one per container and interface ([`handle_id`]).
    pub fn handle(&self, network: &str) -> String {
        handle_id(network, &self.container_id, &self.ifname)
    }

    /// Calico's handle (`<network>.<containerID>`), released on DEL too so that a pod
    /// addressed by calico-ipam before a switch to routerd is freed.
    pub fn calico_handle(&self, network: &str) -> String {
        format!("{network}.{}", self.container_id)
    }

    /// The identity part of the WorkloadEndpoint's spec (orchestrator, node, pod or
    /// container, interface).
    pub fn endpoint_spec(&self) -> WorkloadEndpointSpec {
        WorkloadEndpointSpec {
            orchestrator: self.orchestrator.into(),
            // calicoctl shows `workload`, else `pod`: a runtime without pods is named by its
            // container.
            workload: if self.pod.is_empty() {
                self.container_id.clone()
            } else {
                String::new()
            },
            node: self.node.clone(),
            container_id: self.container_id.clone(),
            pod: self.pod.clone(),
            endpoint: self.ifname.clone(),
            ..Default::default()
        }
    }

    /// The WorkloadEndpoint's name (Calico's rule; `None` for a segment Calico refuses).
    pub fn endpoint_name(&self) -> Option<String> {
        self.endpoint_spec().calico_name()
    }
}

/// The IPAM handle of one attachment: `<network>.<containerID>.<ifname>`.
pub fn handle_id(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}.{container_id}.{ifname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_as_calico_names_them() {
        let id = WorkloadId::new(
            Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod1;K8S_POD_INFRA_CONTAINER_ID=abc"),
            "abc",
            "eth0",
            "node-1",
        );
        assert_eq!(id.orchestrator, "k8s");
        // Calico: sha1("default.pod1")[:11].
        assert_eq!(id.host_veth_name(), "calice0906292e2");
        assert_eq!(id.endpoint_name().as_deref(), Some("node--1-k8s-pod1-eth0"));
        assert_eq!(id.handle("net"), "net.abc.eth0");
        assert_eq!(id.calico_handle("net"), "net.abc");
    }

    #[test]
    fn other_runtimes_are_cni_workloads_in_default() {
        let id = WorkloadId::new(None, "0123456789abcdef", "eth1", "n");
        assert_eq!(id.orchestrator, "cni");
        assert_eq!(id.namespace, "default");
        assert_eq!(id.host_veth_name().len(), 15);
        assert_ne!(
            id.host_veth_name(),
            WorkloadId::new(None, "0123456789abcdef", "eth0", "n").host_veth_name()
        );
        assert_eq!(
            id.endpoint_name().as_deref(),
            Some("n-cni-0123456789abcdef-eth1")
        );
    }
}
