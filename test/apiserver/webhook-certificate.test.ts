// SPDX-License-Identifier: Apache-2.0
// The webhook certificate's rotation against a real kube-apiserver (v1.36.3): an about-to-expire
// certificate in the Secret is replaced, every webhook's caBundle then trusts the new and the
// previous CA, and the admission Deployment's pod template changes (which rolls its pods); a
// second check changes nothing; a caBundle that lost the CA is repaired. With helm at hand,
// the same again as the controller's ServiceAccount holding only the chart's RBAC, and the
// chart's upgrade render (with lookup, against this API server) keeps what the controller wrote.
import t from "tap";
import { execa } from "execa";
import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { K8s, kind } from "kubernetes-fluent-client";
import { parseAllDocuments } from "yaml";
import {
  CERTIFICATE_CHECKSUM_ANNOTATION,
  certificateChecksum,
  issueServingCertificate,
  pemCertificates,
  type ServingCertificate,
  type WebhookCertificateSettings,
} from "../../capabilities/gateway/webhook-certificate";
import {
  WebhookCertificateRotation,
  serveControllerMetrics,
} from "../../capabilities/gateway/webhook-rotation";
import {
  cacheBinDir,
  findBinaries,
  serviceAccountKubeconfig,
  startApiServer,
} from "../lib/apiserver";

const DAY = 86_400_000;
// The names `helm template gw charts/blixt -n blixt-system` gives.
const NAMESPACE = "blixt-system";
const ADMISSION = "gw-blixt-admission";
const SECRET = "gw-blixt-tls";
const CONTROLLER_SA = "gw-blixt-controller";
const chartDir = resolve(import.meta.dirname, "../../charts/blixt");

const settings: WebhookCertificateSettings = {
  namespace: NAMESPACE,
  service: ADMISSION,
  secret: SECRET,
  webhookConfiguration: ADMISSION,
  deployment: ADMISSION,
  validityDays: 365,
  renewBeforeDays: 0,
  checkIntervalSeconds: 3600,
  metricsAddress: "127.0.0.1",
  metricsPort: 0,
};

const b64 = (text: string) => Buffer.from(text).toString("base64");
const unb64 = (text: string | undefined) => Buffer.from(text ?? "", "base64").toString("utf8");
const fingerprints = (bundle: string) =>
  pemCertificates(bundle).map(pem => new X509Certificate(pem).fingerprint256);
const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

// As `helm install gw` marks what it made, so the chart's upgrade render may adopt these objects.
const helmOwned = {
  labels: { "app.kubernetes.io/managed-by": "Helm" },
  annotations: { "meta.helm.sh/release-name": "gw", "meta.helm.sh/release-namespace": NAMESPACE },
};

function logger() {
  const lines: string[] = [];
  return {
    lines,
    info: (m: string) => lines.push(m),
    warn: (m: string) => lines.push(`warn: ${m}`),
    error: (m: string) => lines.push(`error: ${m}`),
  };
}

/** A certificate issued 300 of its 365 days ago: 65 days left, less than a third, so due. */
const aboutToExpire = () =>
  issueServingCertificate({
    service: ADMISSION,
    namespace: NAMESPACE,
    validityDays: 365,
    now: new Date(Date.now() - 300 * DAY),
  });

async function putSecret(certificate: ServingCertificate): Promise<void> {
  await K8s(kind.Secret).Apply(
    {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name: SECRET,
        namespace: NAMESPACE,
        labels: helmOwned.labels,
        annotations: {
          ...helmOwned.annotations,
          [CERTIFICATE_CHECKSUM_ANNOTATION]: certificateChecksum(certificate.cert),
        },
      },
      data: {
        "tls.crt": b64(certificate.cert),
        "tls.key": b64(certificate.key),
        "ca.crt": b64(certificate.ca),
      },
    },
    { force: true },
  );
}

async function putWebhookConfiguration(caBundle: string): Promise<void> {
  const webhook = (name: string, group: string, resource: string) => ({
    name,
    admissionReviewVersions: ["v1"],
    sideEffects: "None",
    failurePolicy: "Ignore",
    matchPolicy: "Equivalent",
    timeoutSeconds: 5,
    clientConfig: {
      service: { name: ADMISSION, namespace: NAMESPACE, path: "/validate/test", port: 443 },
      caBundle: b64(caBundle),
    },
    rules: [
      {
        apiGroups: [group],
        apiVersions: ["*"],
        operations: ["CREATE", "UPDATE"],
        resources: [resource],
        scope: "*",
      },
    ],
  });
  await K8s(kind.ValidatingWebhookConfiguration).Apply(
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingWebhookConfiguration",
      metadata: { name: ADMISSION, ...helmOwned },
      webhooks: [
        webhook(`dataplaneconfigs.${NAMESPACE}.blixt.dev`, "blixt.dev", "dataplaneconfigs"),
        webhook(`gateway-api.${NAMESPACE}.blixt.dev`, "gateway.networking.k8s.io", "tcproutes"),
      ],
    } as never,
    { force: true },
  );
}

async function putDeployment(name: string, checksum: string): Promise<void> {
  // No controller-manager runs: the Deployment's template is what the test watches, no pod starts.
  await K8s(kind.Deployment).Apply(
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name, namespace: NAMESPACE, ...helmOwned },
      spec: {
        selector: { matchLabels: { app: name } },
        template: {
          metadata: {
            labels: { app: name },
            annotations: { [CERTIFICATE_CHECKSUM_ANNOTATION]: checksum, "example.dev/kept": "yes" },
          },
          spec: { containers: [{ name: "admission", image: "registry.invalid/blixt:test" }] },
        },
      },
    },
    { force: true },
  );
}

async function live() {
  const secret = await K8s(kind.Secret).InNamespace(NAMESPACE).Get(SECRET);
  const configuration = await K8s(kind.ValidatingWebhookConfiguration).Get(ADMISSION);
  const deployment = await K8s(kind.Deployment).InNamespace(NAMESPACE).Get(ADMISSION);
  return {
    secret,
    configuration,
    deployment,
    cert: unb64(secret.data?.["tls.crt"]),
    key: unb64(secret.data?.["tls.key"]),
    ca: unb64(secret.data?.["ca.crt"]),
    bundles: configuration.webhooks!.map(w => unb64(w.clientConfig.caBundle)),
    annotations: deployment.spec!.template.metadata!.annotations ?? {},
  };
}

function findHelm(): string | undefined {
  return [process.env.HELM, join(cacheBinDir(), "helm")].find(
    (candidate): candidate is string => !!candidate && existsSync(candidate),
  );
}

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  t.test("webhook certificate rotation against a real API server", async t => {
    const server = await startApiServer(t, binaries);
    await K8s(kind.Namespace).Apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: NAMESPACE },
    });
    const old = await aboutToExpire();
    await putSecret(old);
    await putWebhookConfiguration(old.ca);
    await putDeployment(ADMISSION, certificateChecksum(old.cert));

    const log = logger();
    const rotation = new WebhookCertificateRotation(settings, log);

    await t.test(
      "an about-to-expire certificate is replaced, both CAs trusted, the pods rolled",
      async t => {
        const before = await live();
        const result = await rotation.check();
        t.equal(result.renewed, true);
        const after = await live();

        t.not(after.cert, old.cert, "a new certificate in the Secret");
        const cert = new X509Certificate(after.cert);
        const ca = new X509Certificate(after.ca);
        t.not(after.ca, old.ca, "signed by a new CA");
        t.ok(cert.verify(ca.publicKey), "tls.crt is signed by ca.crt");
        t.ok(
          cert.checkPrivateKey((await import("node:crypto")).createPrivateKey(after.key)),
          "tls.key belongs to tls.crt",
        );
        t.equal(
          cert.subjectAltName,
          [
            ADMISSION,
            `${ADMISSION}.${NAMESPACE}`,
            `${ADMISSION}.${NAMESPACE}.svc`,
            `${ADMISSION}.${NAMESPACE}.svc.cluster.local`,
          ]
            .map(n => `DNS:${n}`)
            .join(", "),
        );
        const daysLeft = (Date.parse(cert.validTo) - Date.now()) / DAY;
        t.ok(
          daysLeft > 364 && daysLeft <= 365,
          `valid for validityDays from now (${daysLeft.toFixed(2)} days left)`,
        );
        t.equal(result.daysLeft, 364, "the result says how long the new one lasts");
        t.equal(after.secret.type, "kubernetes.io/tls");
        t.equal(
          after.secret.metadata?.annotations?.[CERTIFICATE_CHECKSUM_ANNOTATION],
          certificateChecksum(after.cert),
          "the Secret's checksum annotation follows",
        );

        t.equal(after.bundles.length, 2, "both webhooks");
        for (const [i, bundle] of after.bundles.entries()) {
          t.same(
            fingerprints(bundle),
            [fingerprint(after.ca), fingerprint(old.ca)],
            `webhook ${i}: the new CA and the previous one, nothing else`,
          );
        }

        t.equal(
          after.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          certificateChecksum(after.cert),
          "the pod template carries the new certificate's checksum",
        );
        t.not(
          after.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          before.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          "so the template changed",
        );
        t.equal(after.annotations["example.dev/kept"], "yes", "other annotations stay");
        t.equal(
          after.deployment.metadata?.generation,
          (before.deployment.metadata?.generation ?? 0) + 1,
          "a new generation: the Deployment rolls its pods",
        );
        t.same(
          after.deployment.spec?.template.spec?.containers.map(c => c.image),
          ["registry.invalid/blixt:test"],
          "the rest of the template is untouched",
        );
        const served = await serveControllerMetrics(rotation.metrics.registry, 0, "127.0.0.1");
        t.teardown(() => served.close());
        const scrape = await (
          await fetch(`http://127.0.0.1:${(served.address() as AddressInfo).port}/metrics`)
        ).text();
        t.match(
          scrape,
          `blixt_webhook_certificate_expiry_timestamp_seconds ${Date.parse(cert.validTo) / 1000}\n`,
          "the new expiry, served on /metrics",
        );
        t.match(scrape, "blixt_webhook_certificate_renewals_total 1\n");
        t.match(log.lines.join("\n"), /renewing, expires on \S+, 64 days left; due since/);
        t.match(
          log.lines.join("\n"),
          /renewed; the new one expires on .*, 364 days left; renews on/,
        );
      },
    );

    await t.test("a second check finds it valid and writes nothing", async t => {
      const before = await live();
      log.lines.length = 0;
      const result = await rotation.check();
      const after = await live();
      t.equal(result.renewed, false);
      t.equal(
        after.secret.metadata?.resourceVersion,
        before.secret.metadata?.resourceVersion,
        "Secret untouched",
      );
      t.equal(
        after.configuration.metadata?.resourceVersion,
        before.configuration.metadata?.resourceVersion,
        "webhook configuration untouched",
      );
      t.equal(
        after.deployment.metadata?.generation,
        before.deployment.metadata?.generation,
        "no second rollout",
      );
      t.match(
        log.lines,
        [
          /webhook certificate \(Secret blixt-system\/gw-blixt-tls\): expires on \S+, 364 days left; renews on /,
        ],
        "logs the expiry date and the days left",
      );
    });

    await t.test(
      "a caBundle that lost the Secret's CA is repaired, keeping its other CAs",
      async t => {
        const current = await live();
        const configuration = current.configuration;
        await K8s(kind.ValidatingWebhookConfiguration, { name: ADMISSION }).Patch([
          { op: "replace", path: "/webhooks/1/clientConfig/caBundle", value: b64(old.ca) },
        ]);
        t.not(configuration.metadata?.resourceVersion, undefined);
        const result = await rotation.check();
        const after = await live();
        t.equal(result.renewed, false);
        t.same(
          fingerprints(after.bundles[1]),
          [fingerprint(current.ca), fingerprint(old.ca)],
          "the Secret's CA back in front",
        );
        t.same(
          fingerprints(after.bundles[0]),
          [fingerprint(current.ca), fingerprint(old.ca)],
          "the other webhook as it was",
        );
        t.equal(
          after.deployment.metadata?.generation,
          current.deployment.metadata?.generation,
          "no rollout for a repair",
        );
      },
    );

    await t.test(
      "an unusable Secret is renewed; a missing one is an error that says what to do",
      async t => {
        const current = await live();
        await K8s(kind.Secret, { name: SECRET, namespace: NAMESPACE }).Patch([
          { op: "replace", path: "/data/tls.key", value: b64("not a key") },
        ]);
        log.lines.length = 0;
        t.equal((await rotation.check()).renewed, true);
        t.match(log.lines[0], /is unusable: tls.key is not a PEM private key/);
        const after = await live();
        t.same(fingerprints(after.bundles[0]), [fingerprint(after.ca), fingerprint(current.ca)]);
        const missing = new WebhookCertificateRotation({ ...settings, secret: "absent" }, logger());
        await t.rejects(
          missing.check(),
          /cannot read Secret blixt-system\/absent .*run helm upgrade to restore it/,
        );
      },
    );

    await t.test("the periodic loop logs a failed check, counts it and carries on", async t => {
      const failing = logger();
      const loop = new WebhookCertificateRotation(
        { ...settings, secret: "absent", checkIntervalSeconds: 10 },
        failing,
      );
      loop.start();
      t.teardown(() => loop.stop());
      for (let i = 0; i < 100 && !failing.lines.length; i++)
        await new Promise(r => setTimeout(r, 100));
      t.match(failing.lines, [
        /^error: webhook certificate: cannot read Secret blixt-system\/absent .*; retrying in 10 s$/,
      ]);
      t.match(
        await loop.metrics.registry.metrics(),
        "blixt_webhook_certificate_check_errors_total 1\n",
      );
    });

    const helm = findHelm();
    await t.test(
      "as the controller's ServiceAccount with only the chart's RBAC",
      {
        skip: helm
          ? false
          : "no helm binary (HELM or the local cluster's cache) to render the chart's RBAC",
      },
      async t => {
        // The chart's RBAC objects, applied as rendered.
        const rendered = await execa(helm!, [
          "template",
          "gw",
          chartDir,
          "--namespace",
          NAMESPACE,
          "--set",
          "gatewayClass.create=false",
          "--show-only",
          "templates/rbac.yaml",
        ]);
        const wanted = (o: { kind: string; metadata: { name: string } }) =>
          (["ClusterRole", "ClusterRoleBinding"].includes(o.kind) &&
            o.metadata.name === CONTROLLER_SA) ||
          (["Role", "RoleBinding"].includes(o.kind) &&
            o.metadata.name === `${CONTROLLER_SA}-webhook-certificate`);
        const objects = parseAllDocuments(rendered.stdout)
          .map(d => d.toJS())
          .filter(o => o && wanted(o));
        t.equal(
          objects.length,
          4,
          "ClusterRole, ClusterRoleBinding, Role, RoleBinding of the controller",
        );
        const models: Record<string, typeof kind.Role> = {
          ClusterRole: kind.ClusterRole,
          ClusterRoleBinding: kind.ClusterRoleBinding,
          Role: kind.Role,
          RoleBinding: kind.RoleBinding,
        } as never;
        for (const o of objects)
          await K8s(models[o.kind]).Apply(
            { ...o, metadata: { ...o.metadata, annotations: helmOwned.annotations } },
            { force: true },
          );

        // A client certificate whose user name is the ServiceAccount's: RBAC matches it as that ServiceAccount.
        const kubeconfig = await serviceAccountKubeconfig(server, NAMESPACE, CONTROLLER_SA);

        const expiring = await aboutToExpire();
        await putSecret(expiring);
        await putDeployment("other", "0");
        const before = await live();
        const admin = process.env.KUBECONFIG;
        process.env.KUBECONFIG = kubeconfig;
        try {
          const result = await new WebhookCertificateRotation(settings, logger()).check();
          t.equal(result.renewed, true, "renewed with the chart's RBAC alone");
          await t.rejects(
            new WebhookCertificateRotation({ ...settings, deployment: "other" }, logger()).check(),
            /cannot restart Deployment blixt-system\/other/,
            "no other Deployment may be patched",
          );
          await t.rejects(
            K8s(kind.Secret, { name: "other", namespace: NAMESPACE }).Patch([
              { op: "add", path: "/data", value: {} },
            ]),
            "no other Secret may be patched",
          );
        } finally {
          process.env.KUBECONFIG = admin;
        }
        const after = await live();
        t.not(after.cert, expiring.cert);
        t.same(fingerprints(after.bundles[0]), [fingerprint(after.ca), fingerprint(expiring.ca)]);
        t.not(
          after.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          before.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
        );
      },
    );

    await t.test(
      "the chart's upgrade render keeps what the controller wrote",
      { skip: helm ? false : "no helm binary (HELM or the local cluster's cache)" },
      async t => {
        const current = await live();
        // --dry-run=server lets lookup read this API server, as `helm upgrade` would.
        const rendered = await execa(helm!, [
          "template",
          "gw",
          chartDir,
          "--namespace",
          NAMESPACE,
          "--set",
          "gatewayClass.create=false",
          "--dry-run=server",
          "--kubeconfig",
          server.kubeconfig,
          "--show-only",
          "templates/admission.yaml",
        ]);
        const objects = parseAllDocuments(rendered.stdout)
          .map(d => d.toJS())
          .filter(Boolean);
        const secret = objects.find(o => o.kind === "Secret" && o.metadata.name === SECRET);
        const configuration = objects.find(o => o.kind === "ValidatingWebhookConfiguration");
        const deployment = objects.find(o => o.kind === "Deployment");
        t.same(
          secret.data,
          current.secret.data,
          "the Secret's data as live: Helm's apply changes nothing the controller owns",
        );
        t.equal(
          secret.metadata.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          current.secret.metadata?.annotations?.[CERTIFICATE_CHECKSUM_ANNOTATION],
        );
        for (const webhook of configuration.webhooks)
          t.equal(
            unb64(webhook.clientConfig.caBundle),
            current.bundles[0],
            `${webhook.name}: the live caBundle`,
          );
        t.equal(
          deployment.spec.template.metadata.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          current.annotations[CERTIFICATE_CHECKSUM_ANNOTATION],
          "the checksum the controller set: no rollout",
        );
      },
    );
  });
}
