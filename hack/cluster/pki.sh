# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Certificates and keys for the local cluster, made with openssl: one CA signs every
# serving and client certificate; the service-account token keys are a separate pair.
# Sourced by hack/cluster.sh.

# pki_cert NAME SUBJECT [SANS]: an EC P-256 key and a one-year certificate signed by the CA.
# SANS (e.g. "IP:198.18.0.2,DNS:kubernetes") makes it a serving certificate.
pki_cert() {
  local name=$1 subject=$2 sans=${3:-} ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/$name.key" 2>/dev/null &&
    openssl req -new -key "$PKI_DIR/$name.key" -subj "$subject" -out "$PKI_DIR/$name.csr" &&
    openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
      -CAcreateserial -days 365 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null ||
    { rm -f "$ext"; die "openssl could not make the $name certificate"; }
  rm -f "$ext" "$PKI_DIR/$name.csr"
}

pki_make() {
  mkdir -p "$PKI_DIR" && chmod 700 "$PKI_DIR"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/ca.key" 2>/dev/null &&
    openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=blixt-local-ca" -days 365 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI_DIR/ca.crt" || die "openssl could not make the cluster CA"
  pki_cert apiserver "/CN=kube-apiserver" \
    "IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  pki_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  pki_cert admin "/O=system:masters/CN=blixt-admin"
  pki_cert controller-manager "/CN=system:kube-controller-manager"
  pki_cert scheduler "/CN=system:kube-scheduler"
  pki_cert kube-proxy "/CN=system:kube-proxy"
  pki_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  pki_cert kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
  # Service-account tokens: RSA, the algorithm every token consumer accepts.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null &&
    openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" ||
    die "openssl could not make the service-account key pair"
}

# kubeconfig_make FILE CERTNAME: a kubeconfig that reaches the apiserver on the node's
# address (valid from the root namespace and from inside the node alike).
kubeconfig_make() {
  local file=$1 cert=$2 kubectl=$BIN_DIR/kubectl
  rm -f "$file"
  "$kubectl" config --kubeconfig "$file" set-cluster blixt-local --server "https://$NODE_IP:6443" \
    --certificate-authority "$PKI_DIR/ca.crt" --embed-certs >/dev/null &&
    "$kubectl" config --kubeconfig "$file" set-credentials "$cert" \
      --client-certificate "$PKI_DIR/$cert.crt" --client-key "$PKI_DIR/$cert.key" --embed-certs >/dev/null &&
    "$kubectl" config --kubeconfig "$file" set-context blixt-local --cluster blixt-local --user "$cert" >/dev/null &&
    "$kubectl" config --kubeconfig "$file" use-context blixt-local >/dev/null ||
    die "kubectl could not write the kubeconfig $file"
  chmod 600 "$file"
}
