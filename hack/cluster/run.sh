# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Starting, stopping and inspecting the local cluster. Sourced by hack/cluster.sh.

source "$HACK_CLUSTER/pki.sh"

CONTAINERD_SOCK=$STATE_DIR/containerd/containerd.sock
CNI_BIN_DIR=/usr/lib/cni
KUBELET_ROOT=$STATE_DIR/kubelet
# Start order (down has its own, see cluster_down).
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)
# Machine-wide sysctls the kubelet sets at start (its "kernel tunables"); saved before
# and restored by down, so the cluster leaves the machine as it found it.
KUBELET_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# Paths whose location the components fix; down removes them.
FIXED_PATHS=(/var/log/containers /var/lib/kubelet/device-plugins /var/lib/cni/results)

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# render TEMPLATE OUT: fills ${VARS} from this script's settings (and nothing else, so a
# literal $ in a template stays as it is).
render() {
  export STATE_DIR BIN_DIR PKI_DIR CONTAINERD_SOCK CNI_BIN_DIR PAUSE_IMAGE NODE_IP NODE_NAME POD_CIDR
  envsubst '${STATE_DIR} ${BIN_DIR} ${PKI_DIR} ${CONTAINERD_SOCK} ${CNI_BIN_DIR} ${PAUSE_IMAGE} ${NODE_IP} ${NODE_NAME} ${POD_CIDR}' \
    <"$HACK_CLUSTER/config/$1" >"$2"
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds; the error names the log.
wait_until() {
  local timeout=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what (logs: $LOG_DIR)"
    sleep 0.2
  done
}

pid_of() { [[ -f $PID_DIR/$1.pid ]] && cat "$PID_DIR/$1.pid"; }

# runs_binary PID PATH: PID is still PATH (a recycled pid is not ours; a binary rebuilt
# while it runs shows as "PATH (deleted)" and is still ours).
runs_binary() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$2" ]]
}

alive() {
  local pid
  pid=$(pid_of "$1") || return 1
  runs_binary "$pid" "$BIN_DIR/$1"
}

# start NAME ARGS...: runs $BIN_DIR/NAME inside the node's netns, in its own session (a
# Ctrl-C in this shell does not reach it), logging to $LOG_DIR/NAME.log.
start() {
  local name=$1
  shift
  PATH="$BIN_DIR:$PATH" setsid nsenter --net="/var/run/netns/$NODE_NETNS" -- \
    "$BIN_DIR/$name" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$PID_DIR/$name.pid"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# stop_daemons NAME...: SIGTERM to each that runs, all at once (their graceful shutdowns
# overlap), then SIGKILL to whatever is left after 10 s.
stop_daemons() {
  local name pids=() names=() i
  for name in "$@"; do
    alive "$name" || continue
    pids+=("$(pid_of "$name")") names+=("$name")
    kill -TERM "${pids[-1]}" 2>/dev/null || true
  done
  ((${#pids[@]})) || return 0
  local left pid
  for ((i = 0; i < 100; i++)); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    ((left)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[i]}" 2>/dev/null; then
      log "${names[i]} (pid ${pids[i]}) ignored SIGTERM for 10 s; killing it"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
  done
  log "stopped ${names[*]}"
}

net_up() {
  ip netns add "$NODE_NETNS" || die "could not create netns $NODE_NETNS (left over? run: hack/cluster.sh down)"
  ip link add "$VETH_ROOT" type veth peer name "$VETH_NODE" netns "$NODE_NETNS"
  ip addr add "$ROOT_IP/$SEGMENT_PREFIX" dev "$VETH_ROOT"
  ip link set "$VETH_ROOT" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/$SEGMENT_PREFIX" dev "$VETH_NODE"
  in_node ip link set "$VETH_NODE" up
  # Without a default route, traffic from the node to a ClusterIP fails route lookup
  # before kube-proxy's DNAT in OUTPUT can rewrite it.
  in_node ip route add default via "$ROOT_IP"
  in_node sysctl -qw net.ipv4.ip_forward=1
  # Pod-to-Service-to-pod on one bridge needs bridged frames to pass iptables.
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

write_configs() {
  mkdir -p "$STATE_DIR"/{etcd,containerd,cni/net.d,cni/ipam,pod-logs,runc} "$KUBELET_ROOT"
  pki_make
  kubeconfig_make "$KUBECONFIG_PATH" admin
  kubeconfig_make "$STATE_DIR/controller-manager.kubeconfig" controller-manager
  kubeconfig_make "$STATE_DIR/scheduler.kubeconfig" scheduler
  kubeconfig_make "$STATE_DIR/kubelet.kubeconfig" kubelet
  kubeconfig_make "$STATE_DIR/kube-proxy.kubeconfig" kube-proxy
  render containerd.toml "$STATE_DIR/containerd.toml"
  render kubelet.yaml "$STATE_DIR/kubelet.yaml"
  render kube-proxy.yaml "$STATE_DIR/kube-proxy.yaml"
}

start_control_plane() {
  start etcd --name "$NODE_NAME" --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --log-level warn
  wait_until 30 "etcd health" in_node curl -fsS http://127.0.0.1:2379/health

  start kube-apiserver --etcd-servers http://127.0.0.1:2379 \
    --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port 6443 \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --profiling=false
  wait_until 60 "kube-apiserver /readyz" kubectl_admin get --raw /readyz

  start kube-controller-manager --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
  start kube-scheduler --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  start containerd --config "$STATE_DIR/containerd.toml"
  wait_until 30 "containerd's socket" "$BIN_DIR/ctr" --address "$CONTAINERD_SOCK" version
  image_import "$IMAGE_DIR/pause.tar" >/dev/null 2>&1
  image_import "$IMAGE_DIR/echo.tar" >/dev/null 2>&1
  log "imported $PAUSE_IMAGE and $ECHO_IMAGE"

  local name
  for name in "${KUBELET_SYSCTLS[@]}"; do sysctl -n "$name"; done >"$STATE_DIR/sysctls.saved"
  start_kubelet
  start kube-proxy --config "$STATE_DIR/kube-proxy.yaml"

  # The CNI config is written once the controller-manager has given the node its pod
  # CIDR, so host-local hands out exactly the addresses Kubernetes expects.
  wait_until 60 "node $NODE_NAME to register with a pod CIDR" node_pod_cidr
  NODE_POD_CIDR=$(node_pod_cidr)
  write_cni_config "$STATE_DIR/cni/net.d/10-blixt.conflist"
  log "node pod CIDR $NODE_POD_CIDR"
}

start_kubelet() {
  start kubelet --config "$STATE_DIR/kubelet.yaml" --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME"
}

# restart_kubelet: what a kubelet upgrade or crash does to a node: the kubelet stops (SIGTERM)
# and starts again; the pods keep running in containerd meanwhile. Returns once the node is
# Ready again.
restart_kubelet() {
  cluster_running || die "the cluster is not up: run hack/cluster.sh up"
  local start_time=$SECONDS
  stop_daemons kubelet
  start_kubelet
  # The node's Ready condition lags a restart; wait for this kubelet's own heartbeat.
  wait_until 120 "node $NODE_NAME to be Ready" \
    kubectl_admin wait --for condition=Ready --timeout 1s "node/$NODE_NAME"
  log "kubelet restarted; node $NODE_NAME Ready after $((SECONDS - start_time)) s"
}

# write_cni_config FILE: a bridge (cni0) with host-local IPAM on the node's pod CIDR,
# masquerading traffic that leaves it, hairpin so a pod reaches itself through a Service;
# portmap for hostPort.
write_cni_config() {
  cat >"$1" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "blixt-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE_DIR/cni/ipam",
        "ranges": [[{ "subnet": "$NODE_POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
}

node_pod_cidr() {
  local cidr
  cidr=$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}') && [[ -n $cidr ]] && echo "$cidr"
}

default_sa_exists() { kubectl_admin -n default get serviceaccount default; }

install_gateway_api() {
  kubectl_admin apply --server-side -f "$REPO_ROOT/$GATEWAY_API_CRDS" >/dev/null ||
    die "applying $GATEWAY_API_CRDS failed"
  local crds
  crds=$(kubectl_admin get crd -o name | grep '\.gateway\.networking\.k8s\.io$') ||
    die "no Gateway API CRDs found after applying $GATEWAY_API_CRDS"
  # shellcheck disable=SC2086 # one name per word
  kubectl_admin wait --for condition=Established --timeout 60s $crds >/dev/null ||
    die "the Gateway API CRDs did not become Established"
  log "Gateway API CRDs installed from $GATEWAY_API_CRDS"
}

# cluster_running: every daemon runs and an up finished (an interrupted up is not a cluster).
cluster_running() {
  local d
  for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
  [[ -f $STATE_DIR/up.done ]]
}

cluster_up() {
  if cluster_running; then
    log "cluster already running; kubeconfig: $KUBECONFIG_PATH"
    return 0
  fi
  # Whatever a failed or interrupted earlier run left goes first.
  if [[ -e /var/run/netns/$NODE_NETNS || -d $PID_DIR ]]; then
    log "cleaning up an earlier run"
    cluster_down
  fi
  local start_time=$SECONDS
  trap '[[ $? == 0 ]] || log "up did not finish: logs in $LOG_DIR; hack/cluster.sh down removes what it started"' EXIT
  rm -rf "$LOG_DIR"
  mkdir -p "$LOG_DIR" "$PID_DIR"
  write_configs
  net_up
  start_control_plane
  log "control plane ready after $((SECONDS - start_time)) s"
  start_node
  wait_until 120 "node $NODE_NAME to be Ready" \
    kubectl_admin wait --for condition=Ready --timeout 1s "node/$NODE_NAME"
  log "node $NODE_NAME Ready after $((SECONDS - start_time)) s"
  wait_until 120 "the default ServiceAccount" default_sa_exists
  install_gateway_api
  touch "$STATE_DIR/up.done"
  trap - EXIT
  log "cluster up in $((SECONDS - start_time)) s"
  log "kubeconfig: $KUBECONFIG_PATH (API server https://$NODE_IP:6443)"
  log "use it with: eval \"\$(hack/cluster.sh env)\""
  log "Gateway address pool on the node's segment: $GATEWAY_POOL_FIRST-$GATEWAY_POOL_LAST"
}

# kill_cgroup_tasks: SIGKILL every process in a kubepods cgroup (the pods' containers).
kill_cgroup_tasks() {
  local procs pid
  while read -r procs; do
    # A cgroup can vanish between find and read (its pod just exited): skip it.
    [[ -r $procs ]] || continue
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < <(cat "$procs" 2>/dev/null || true)
  done < <(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null)
}

# stop_pods: kills every container of this cluster and its containerd shim. Shims are
# found through the task dirs in our containerd state (the shim is the parent of each
# task's init.pid), never by process name, since other containerds may run on the machine.
# A killed shim leaves its socket under /run/containerd/s (a path containerd fixes);
# bootstrap.json names it.
stop_pods() {
  local dir pid ppid socket shims=() sockets=()
  for dir in "$STATE_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/; do
    if [[ -f $dir/init.pid ]]; then
      pid=$(<"$dir/init.pid")
      ppid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ') &&
        runs_binary "$ppid" "$BIN_DIR/containerd-shim-runc-v2" && shims+=("$ppid")
    fi
    if [[ -f $dir/bootstrap.json ]]; then
      socket=$(sed -n 's#.*"address":"unix://\([^"]*\)".*#\1#p' "$dir/bootstrap.json")
      [[ -n $socket ]] && sockets+=("$socket")
    fi
  done
  kill_cgroup_tasks
  ((${#shims[@]} == 0)) || kill -KILL "${shims[@]}" 2>/dev/null || true
  ((${#sockets[@]} == 0)) || rm -f "${sockets[@]}"
  # Only if empty: another containerd on the machine may use it too.
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
}

# unmount_state: every mount under the state dir (pod volumes, rootfs overlays, pod
# netns, shm), deepest first.
unmount_state() {
  local mounts
  mounts=$(awk -v dir="$STATE_DIR/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  [[ -n $mounts ]] || return 0
  local mount
  while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || log "could not unmount $mount"
  done <<<"$mounts"
}

remove_kubepods_cgroups() {
  local root dir
  for root in /sys/fs/cgroup/*/kubepods; do
    [[ -d $root ]] || continue
    # Children before parents: rmdir only removes an empty cgroup.
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d $root ]] && log "could not remove cgroup $root (a process still in it?)"
  done
  return 0
}

restore_sysctls() {
  local saved=$STATE_DIR/sysctls.saved i=0 value
  [[ -f $saved ]] || return 0
  while read -r value; do
    sysctl -qw "${KUBELET_SYSCTLS[i]}=$value" || true
    i=$((i + 1))
  done <"$saved"
}

cluster_down() {
  local start_time=$SECONDS
  # Node and controllers first; pods before containerd (with it gone nothing reaps their
  # shims); the apiserver before etcd (the other way round its shutdown waits 30 s).
  stop_daemons kube-proxy kubelet kube-scheduler kube-controller-manager
  stop_pods
  stop_daemons containerd kube-apiserver
  stop_daemons etcd
  # Again, for pods whose containerd had already died.
  stop_pods
  unmount_state
  if [[ -e /var/run/netns/$NODE_NETNS ]]; then
    ip netns del "$NODE_NETNS" || log "could not delete netns $NODE_NETNS"
  fi
  # The veth normally dies with the netns; a half-made one may not have.
  ip link del "$VETH_ROOT" 2>/dev/null || true
  remove_kubepods_cgroups
  restore_sysctls
  rm -rf "${FIXED_PATHS[@]}"
  # The node shares this machine's bpffs: pins a blixt agent made on the node outlive the
  # netns (its programs went with the node's interfaces). The chart's default pin dir.
  rm -rf "${BLIXT_NODE_PIN_DIR:-/sys/fs/bpf/blixt}"
  rmdir /var/lib/kubelet /var/lib/cni 2>/dev/null || true
  # Keep the last run's logs for a post-mortem; everything else of the run goes.
  if [[ -d $STATE_DIR ]]; then
    find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null ||
      log "could not remove everything in $STATE_DIR (still mounted?)"
  fi
  log "cluster down in $((SECONDS - start_time)) s (logs of the last run kept in $LOG_DIR)"
}

cluster_status() {
  local name
  for name in "${DAEMONS[@]}"; do
    if alive "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
    else
      printf '%-24s stopped\n' "$name"
    fi
  done
  if alive kube-apiserver; then
    printf '%-24s %s\n' "node $NODE_NAME" \
      "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}Ready={.status} ({.reason}){end}' 2>/dev/null || echo 'not registered')"
    printf '%-24s %s\n' kubeconfig "$KUBECONFIG_PATH"
  fi
  # Exit 0 only for a cluster that finished coming up.
  cluster_running
}

cluster_env() {
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
  printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
}
