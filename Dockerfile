# SPDX-License-Identifier: Apache-2.0
# blixt's image, for builders with Docker/BuildKit: `docker build -t blixt.dev/blixt:dev .`
# hack/image.sh builds the same image without Docker. Both take the Debian packages from
# hack/image/packages.txt, the app from hack/image/stage-app.sh and the last touches from
# hack/image/finalize.sh, so the two cannot drift.

# Build stage: Node.js and npm for `pepr build`, clang for the BPF objects.
FROM docker.io/library/node:22-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY . .
RUN hack/image/stage-app.sh /src /out

# Runtime: Debian bookworm with iproute2 and bpftool, Node.js 22, the module.
FROM docker.io/library/debian:bookworm-slim
COPY hack/image/packages.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^[[:space:]]*#' /tmp/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm /tmp/packages.txt
COPY --from=build /out/ /
COPY hack/image/finalize.sh /tmp/finalize.sh
RUN /bin/sh /tmp/finalize.sh && rm /tmp/finalize.sh
# Non-root by default; the agent's pod runs it as root, privileged.
USER 65532:65532
WORKDIR /app
ENV NODE_ENV=production BLIXT_BPF_DIR=/app/bpf
ENTRYPOINT ["/usr/local/bin/node"]
CMD ["/app/dist/module.cjs"]
