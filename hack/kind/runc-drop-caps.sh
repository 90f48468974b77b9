#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A runtime for dockerd on machines whose capability bounding set lacks CAP_SYS_RESOURCE
# (some VMs drop it): a privileged container asks for every capability, runc cannot grant
# one the bounding set does not hold, and the container fails with "unable to apply caps:
# operation not permitted". This wrapper deletes CAP_SYS_RESOURCE from every capability list
# of the OCI spec runc is handed, then execs runc with the same arguments:
#   create/run: the bundle's config.json (--bundle DIR, -b DIR, or the working directory);
#   exec:       the process spec (--process FILE, -p FILE).
# hack/kind.sh registers it in /etc/docker/daemon.json only where the bounding set lacks the
# capability. The real runc is RUNC (default /usr/sbin/runc, Debian's).
set -euo pipefail
runc=${RUNC:-/usr/sbin/runc}

command="" bundle="" process="" prev=""
for arg in "$@"; do
  case $prev in
    --bundle|-b) bundle=$arg ;;
    --process|-p) process=$arg ;;
  esac
  case $arg in
    --bundle=*) bundle=${arg#--bundle=} ;;
    --process=*) process=${arg#--process=} ;;
    create|run|exec) [[ -z $command ]] && command=$arg ;;
  esac
  prev=$arg
done

# drop FILE JQ-PATH: rewrite FILE without CAP_SYS_RESOURCE under JQ-PATH, atomically.
drop() {
  local file=$1 path=$2
  [[ -f $file ]] || return 0
  jq "if $path then $path |= with_entries(.value |= (if type == \"array\" then map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) else . end" \
    "$file" >"$file.blixt-tmp" && mv -f "$file.blixt-tmp" "$file"
}

case $command in
  create|run) drop "${bundle:-.}/config.json" .process.capabilities ;;
  exec) [[ -n $process ]] && drop "$process" .capabilities ;;
esac
exec "$runc" "$@"
