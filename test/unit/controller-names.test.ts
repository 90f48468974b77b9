// SPDX-License-Identifier: Apache-2.0
// Names the controller puts into API server URLs must be names an object can have.
import t from "tap";
import { dns1123LabelProblem, dns1123SubdomainProblem } from "../../capabilities/gateway/names";

t.test("DNS-1123 subdomains pass; anything that could change a URL's path does not", async t => {
  for (const good of ["cert", "my-cert.example.com", "a", "0", "a".repeat(253), "x-1.y-2"]) {
    t.equal(dns1123SubdomainProblem(good), undefined, good.slice(0, 40));
  }
  for (const bad of [
    "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles",
    "..",
    ".",
    "a/b",
    "a%2Fb",
    "a?watch=1",
    "a#b",
    "Cert",
    "-cert",
    "cert-",
    "a..b",
    ".cert",
    "cert.",
    "a b",
    "",
    "a".repeat(254),
    "cert\n",
  ]) {
    t.type(dns1123SubdomainProblem(bad), "string", JSON.stringify(bad).slice(0, 60));
  }
  t.match(dns1123SubdomainProblem("../x"), /not a DNS-1123 subdomain/);
  t.match(dns1123SubdomainProblem("a".repeat(254)), /254 characters long; at most 253/);
});

t.test("a namespace must be a DNS-1123 label: no dots, at most 63 characters", async t => {
  for (const good of ["tls", "gateway-conformance-infra", "a".repeat(63)]) {
    t.equal(dns1123LabelProblem(good), undefined, good);
  }
  t.match(dns1123LabelProblem("a.b"), /not a DNS-1123 label/);
  t.match(dns1123LabelProblem("../kube-system"), /not a DNS-1123 label/);
  t.match(dns1123LabelProblem("a".repeat(64)), /64 characters long; at most 63/);
  t.match(dns1123LabelProblem(""), /is empty/);
});
