#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs INSIDE blixt's image root filesystem as root, after the Debian packages
# (hack/image/packages.txt) and the staged app (hack/image/stage-app.sh) are in place: the
# Dockerfile runs it with RUN, hack/image.sh with chroot. It adds the non-root user the
# admission and controller roles run as, trims what a container never uses, and fails the
# build if a tool the roles need does not run.
set -eu

# 65532 is the uid/gid Pepr's own controller image runs as; the chart sets runAsUser to it.
if ! getent group blixt >/dev/null; then groupadd --system -K SYS_GID_MAX=65532 --gid 65532 blixt; fi
if ! getent passwd blixt >/dev/null; then
  useradd --system -K SYS_UID_MAX=65532 --uid 65532 --gid 65532 --home-dir /app --no-create-home \
    --shell /usr/sbin/nologin blixt
fi
# Pepr writes nothing under /app when the module is baked in, but a Pepr-style deployment
# (module from a Secret, node_modules/pepr/dist/controller.js) writes /app/module-<hash>.js.
chown 65532:65532 /app

rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
  /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* 2>/dev/null || true

echo "image: node $(/usr/local/bin/node --version)"
echo "image: $(bpftool version | head -n1)"
echo "image: $(ip -V)"
