# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# The pod network of the kind cluster. kind's default CNI (kindnetd) is not a published Go
# module, so the cluster is created with networking.disableDefaultCNI and this installs one
# made of available pieces: the CNI reference plugins in the base image (ptp, host-local,
# loopback, portmap) and a DaemonSet, kube-system/blixt-podnet, running hack/kind/podnet/agent.sh
# (from a ConfigMap) on every node: it writes the node's CNI configuration for its podCIDR and
# routes every other node's podCIDR via that node's address. Sourced by hack/kind.sh.

PODNET_IMAGE=blixt.local/kind-podnet:bookworm
PODNET_NAME=blixt-podnet

# Debian with iproute2, and the kubectl hack/cluster builds (static). Rebuilt when the Debian
# image or kubectl changes.
build_podnet_image() {
  local key ctx
  key=$(hash_of "$(image_key "$DEBIAN_IMAGE")" iproute2 "$BIN_DIR/kubectl")
  [[ $(image_key "$PODNET_IMAGE") == "$key" ]] && return 0
  ctx=$(mktemp -d "$KIND_DIR/ctx.XXXXXX")
  cp "$BIN_DIR/kubectl" "$ctx/kubectl"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY kubectl /usr/local/bin/kubectl
DOCKERFILE
  # --network host: the engine routes nothing for containers (daemon.json), apt needs the mirror.
  docker build --network host --label "dev.blixt.key=$key" -t "$PODNET_IMAGE" "$ctx" >&2 ||
    { rm -rf "$ctx"; kdie "building $PODNET_IMAGE failed"; }
  rm -rf "$ctx"
  klog "built image $PODNET_IMAGE"
}

# The DaemonSet and what it needs. The pod template carries the script's hash, so a changed
# script rolls the pods when an existing cluster is reused.
podnet_manifest() {
  local script=$HACK_KIND/podnet/agent.sh
  cat <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: $PODNET_NAME, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: $PODNET_NAME}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: $PODNET_NAME}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: $PODNET_NAME}
subjects:
- {kind: ServiceAccount, name: $PODNET_NAME, namespace: kube-system}
---
YAML
  kubectl_kind -n kube-system create configmap "$PODNET_NAME" --from-file=agent.sh="$script" \
    --dry-run=client -o yaml
  cat <<YAML
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: $PODNET_NAME, namespace: kube-system, labels: {app: $PODNET_NAME}}
spec:
  selector: {matchLabels: {app: $PODNET_NAME}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 100%}}
  template:
    metadata:
      labels: {app: $PODNET_NAME}
      annotations: {blixt.dev/agent-sha256: "$(sha256sum <"$script" | cut -c1-16)"}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      serviceAccountName: $PODNET_NAME
      # Every node, NotReady ones first of all: this is what makes them Ready.
      tolerations: [{operator: Exists}]
      terminationGracePeriodSeconds: 2
      containers:
      - name: agent
        image: $PODNET_IMAGE
        imagePullPolicy: Never
        command: [/bin/bash, /podnet/agent.sh]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - {name: INTERVAL, value: "10"}
        # The API server straight at the control-plane node, by the name docker's DNS resolves
        # (as the kubelet's and kube-proxy's kubeconfigs do), not at the kubernetes Service:
        # a node just started has no kube-proxy rules yet.
        - {name: KUBERNETES_SERVICE_HOST, value: "$KIND_CLUSTER-control-plane"}
        - {name: KUBERNETES_SERVICE_PORT, value: "6443"}
        # Routes and sysctls of the node's network namespace.
        securityContext: {privileged: true}
        resources: {requests: {cpu: 10m, memory: 20Mi}}
        volumeMounts:
        - {name: cni-conf, mountPath: /etc/cni/net.d}
        - {name: agent, mountPath: /podnet, readOnly: true}
      volumes:
      - name: cni-conf
        hostPath: {path: /etc/cni/net.d, type: DirectoryOrCreate}
      - name: agent
        configMap: {name: $PODNET_NAME}
YAML
}

install_podnet() {
  local manifest
  manifest=$(podnet_manifest) || kdie "could not write the $PODNET_NAME manifest"
  kubectl_kind apply -f - <<<"$manifest" >/dev/null || kdie "applying the $PODNET_NAME DaemonSet failed"
  klog "pod network: DaemonSet kube-system/$PODNET_NAME applied"
}
