# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# The docker engine kind runs on: Debian's docker.io, started by hack/kind.sh (no systemd
# here), configured by /etc/docker/daemon.json. Sourced by hack/kind.sh.

# CAP_SYS_RESOURCE is capability 24. Some VMs drop it from the bounding set of every process;
# runc then cannot start a privileged container (kind's nodes are privileged).
lacks_sys_resource() {
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( ((16#$bnd >> 24) & 1) == 0 ))
}

# The daemon configuration: networks in 198.18.0.0/15 (see lib.sh) and docker kept away from
# the root namespace's iptables (docker's default sets the FORWARD policy to DROP, which
# would cut the netns labs and the local cluster off; kind needs none of its rules: the nodes
# share one bridge, the API server is published by docker-proxy, images are built with
# --network host). No ip_forward either: nothing is routed through the root namespace.
daemon_json() {
  local runtime=""
  if lacks_sys_resource; then
    runtime=$(printf ', "runtimes": {"%s": {"path": "%s"}}, "default-runtime": "%s"' \
      "$RUNTIME_NAME" "$KIND_BIN/runc-drop-caps" "$RUNTIME_NAME")
  fi
  cat <<JSON
{
  "bip": "$DOCKER_BIP",
  "default-address-pools": [{"base": "$DOCKER_POOL", "size": ${DOCKER_POOL#*/}}],
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "userland-proxy": true,
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}$runtime
}
JSON
}

dockerd_running() { docker info >/dev/null 2>&1; }

ensure_docker() {
  ensure_debs docker.io jq
  mkdir -p "$KIND_BIN" "$KIND_STATE" /etc/docker
  ln -sf /usr/bin/docker "$KIND_BIN/docker"
  install -m 0755 "$HACK_KIND/runc-drop-caps.sh" "$KIND_BIN/runc-drop-caps"
  local want
  want=$(daemon_json)
  if [[ -f $DAEMON_JSON && $(cat "$DAEMON_JSON") != "$want" ]]; then
    if dockerd_running; then
      kdie "$DAEMON_JSON differs from what hack/kind.sh needs and dockerd runs with it; stop dockerd (or run: hack/kind.sh down), then rerun"
    fi
    [[ -f $KIND_STATE/daemon.json.orig ]] || cp "$DAEMON_JSON" "$KIND_STATE/daemon.json.orig"
  fi
  printf '%s\n' "$want" >"$DAEMON_JSON"
  if lacks_sys_resource; then
    klog "this machine's capability bounding set lacks CAP_SYS_RESOURCE: dockerd runs containers through $RUNTIME_NAME, which drops it from the OCI spec"
  fi
  if dockerd_running; then
    klog "dockerd already runs"
    return 0
  fi
  klog "starting dockerd (log: $DOCKERD_LOG)"
  # setsid: dockerd outlives this script and ignores its terminal's signals. Without the
  # script's lock descriptors (8, 9): dockerd would hold the locks for as long as it runs.
  # The system's PATH only, as its service unit would have: dockerd starts the containerd it
  # finds first and that containerd the first shim, and the cluster binaries' containerd and
  # shim (another major version, in this script's PATH) must be neither. On a cold machine
  # dockerd started before they were built, so Debian's containerd started the new shim:
  # "shim was started through the deprecated API but was built against the new API".
  env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    setsid nohup /usr/sbin/dockerd --config-file "$DAEMON_JSON" --pidfile "$DOCKERD_PID" \
    >"$DOCKERD_LOG" 2>&1 </dev/null 8>&- 9>&- &
  local i
  for ((i = 0; i < 60; i++)); do
    dockerd_running && { touch "$KIND_STATE/dockerd.ours"; return 0; }
    sleep 0.5
  done
  tail -n 20 "$DOCKERD_LOG" >&2
  kdie "dockerd did not answer within 30 s (log above: $DOCKERD_LOG)"
}

# stop_docker: stops a dockerd this script started and removes the bridge it made; puts back
# a daemon.json that was there before.
stop_docker() {
  if [[ -f $KIND_STATE/dockerd.ours && -f $DOCKERD_PID ]]; then
    local pid i
    pid=$(cat "$DOCKERD_PID")
    if kill -0 "$pid" 2>/dev/null; then
      klog "stopping dockerd (pid $pid)"
      kill "$pid"
      for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kdie "dockerd (pid $pid) did not stop within 30 s"
    fi
    rm -f "$KIND_STATE/dockerd.ours"
    ip link del docker0 2>/dev/null || true
  fi
  if [[ -f $KIND_STATE/daemon.json.orig ]]; then
    mv -f "$KIND_STATE/daemon.json.orig" "$DAEMON_JSON"
  elif [[ -f $DAEMON_JSON && $(cat "$DAEMON_JSON") == "$(daemon_json)" ]]; then
    rm -f "$DAEMON_JSON"
  fi
}
