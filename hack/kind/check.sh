# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# hack/kind.sh check: does the cluster's pod network work across nodes? One pod pinned to every
# node; each pings every other pod's IP, and opens a TCP connection to it, whose server must see
# the client pod's own IP as the source (nothing masquerades pod traffic); each reaches a
# ClusterIP Service (by its DNS name, so CoreDNS too) backed by all of them, until every
# backend has answered. Exit 0 only when all of it works. Sourced by hack/kind.sh.

NETCHECK_IMAGE=blixt.local/netcheck:v1
NETCHECK_NS=blixt-netcheck

build_netcheck_image() {
  local key
  key=$(hash_of "$(image_key "$DEBIAN_IMAGE")" iputils-ping-socat-dnsutils)
  [[ $(image_key "$NETCHECK_IMAGE") == "$key" ]] && return 0
  docker build --network host --label "dev.blixt.key=$key" -t "$NETCHECK_IMAGE" - >/dev/null <<DOCKERFILE || kdie "building $NETCHECK_IMAGE failed"
FROM $DEBIAN_IMAGE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iputils-ping socat \
 && rm -rf /var/lib/apt/lists/*
DOCKERFILE
}

cmd_check() {
  local start=$SECONDS nodes node pods=() ips=() i j failed=0
  if ! dockerd_running || ! cluster_exists; then kdie "no kind cluster $KIND_CLUSTER; run hack/kind.sh up first"; fi
  build_netcheck_image
  kind load docker-image "$NETCHECK_IMAGE" --name "$KIND_CLUSTER" >/dev/null || kdie "kind load $NETCHECK_IMAGE failed"
  mapfile -t nodes < <(kubectl_kind get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  kubectl_kind delete namespace "$NETCHECK_NS" --ignore-not-found --wait >/dev/null
  kubectl_kind create namespace "$NETCHECK_NS" >/dev/null
  for node in "${nodes[@]}"; do
    kubectl_kind -n "$NETCHECK_NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: "on-$node", labels: {app: netcheck}}
spec:
  nodeName: "$node"
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 0
  containers:
  - name: serve
    image: $NETCHECK_IMAGE
    imagePullPolicy: Never
    # Answers every TCP connection on 8080 with the pod's name and the client's address.
    command: [socat, "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo \$(hostname) \$SOCAT_PEERADDR"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
YAML
    pods+=("on-$node")
  done
  kubectl_kind -n "$NETCHECK_NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: netcheck}
spec:
  selector: {app: netcheck}
  ports: [{port: 80, targetPort: 8080}]
YAML
  kubectl_kind -n "$NETCHECK_NS" wait --for=condition=Ready pod --all --timeout=120s >/dev/null ||
    { kubectl_kind -n "$NETCHECK_NS" get pods -o wide >&2; kdie "the check pods did not become Ready"; }
  kubectl_kind -n "$NETCHECK_NS" get pods -o wide >&2
  for i in "${!pods[@]}"; do ips+=("$(kubectl_kind -n "$NETCHECK_NS" get pod "${pods[i]}" -o jsonpath='{.status.podIP}')"); done
  for i in "${!pods[@]}"; do
    for j in "${!pods[@]}"; do
      ((i == j)) && continue
      if kubectl_kind -n "$NETCHECK_NS" exec "${pods[i]}" -- ping -c 2 -W 2 -q "${ips[j]}" >/dev/null 2>&1; then
        klog "ping ${pods[i]} -> ${pods[j]} (${ips[j]}): ok"
      else
        klog "ping ${pods[i]} -> ${pods[j]} (${ips[j]}): FAILED"; failed=1
      fi
    done
  done
  local reply
  for i in "${!pods[@]}"; do
    for j in "${!pods[@]}"; do
      ((i == j)) && continue
      reply=$(kubectl_kind -n "$NETCHECK_NS" exec "${pods[i]}" -- socat -T 2 - "TCP:${ips[j]}:8080,connect-timeout=2" </dev/null 2>/dev/null || true)
      if [[ $reply == "${pods[j]} ${ips[i]}" ]]; then
        klog "tcp ${pods[i]} (${ips[i]}) -> ${pods[j]} (${ips[j]}:8080): ok, the server saw ${reply#* }"
      else
        klog "tcp ${pods[i]} (${ips[i]}) -> ${pods[j]} (${ips[j]}:8080): FAILED (answer: '$reply', want '${pods[j]} ${ips[i]}')"; failed=1
      fi
    done
  done
  local svc answers seen
  svc=$(kubectl_kind -n "$NETCHECK_NS" get service netcheck -o jsonpath='{.spec.clusterIP}')
  for i in "${!pods[@]}"; do
    # Connections to the Service by name until every backend answered (or 40 tries).
    # shellcheck disable=SC2016 # expanded by the pod's shell
    answers=$(kubectl_kind -n "$NETCHECK_NS" exec "${pods[i]}" -- sh -c '
      for n in $(seq 40); do socat -T 2 - TCP:netcheck.'"$NETCHECK_NS"'.svc.cluster.local:80,connect-timeout=2 </dev/null; done' 2>/dev/null |
      cut -d' ' -f1 | sort | uniq -c | tr -s ' ' || true)
    seen=$(grep -c on- <<<"$answers" || true)
    if [[ $seen == "${#pods[@]}" ]]; then
      klog "${pods[i]} -> Service netcheck ($svc:80, by DNS name): all ${#pods[@]} backends answered:$(tr '\n' ' ' <<<" $answers")"
    else
      klog "${pods[i]} -> Service netcheck ($svc:80): $seen of ${#pods[@]} backends answered:$(tr '\n' ' ' <<<" $answers") FAILED"; failed=1
    fi
  done
  kubectl_kind delete namespace "$NETCHECK_NS" --wait=false >/dev/null
  ((failed == 0)) || kdie "pod networking check failed (see above)"
  klog "pod network check passed on ${#nodes[@]} nodes in $((SECONDS - start)) s"
}
