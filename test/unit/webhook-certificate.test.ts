// SPDX-License-Identifier: Apache-2.0
// The admission webhook's certificate: when it is due, what a new one holds (read back with
// node's own X509Certificate and a real TLS handshake), and the caBundle during a rollover.
import t from "tap";
import { X509Certificate, createHash } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { connect, createServer } from "node:tls";
import {
  bundleTrusts,
  bundleWith,
  certificateChecksum,
  decodeSecretData,
  inspectServingCertificate,
  issueServingCertificate,
  pemCertificates,
  renewalDecision,
  rolloverBundle,
  serviceDnsNames,
  webhookCertificateSettings,
} from "../../capabilities/gateway/webhook-certificate";

const DAY = 86_400_000;
const SERVICE = "gw-blixt-admission";
const NAMESPACE = "blixt-system";
const NAMES = [
  SERVICE,
  `${SERVICE}.${NAMESPACE}`,
  `${SERVICE}.${NAMESPACE}.svc`,
  `${SERVICE}.${NAMESPACE}.svc.cluster.local`,
];
const NOW = new Date("2026-12-04T12:00:00Z");

const chartEnv = {
  BLIXT_WEBHOOK_SECRET: "gw-blixt-tls",
  BLIXT_WEBHOOK_NAMESPACE: NAMESPACE,
  BLIXT_WEBHOOK_SERVICE: SERVICE,
  BLIXT_WEBHOOK_CONFIGURATION: SERVICE,
  BLIXT_WEBHOOK_DEPLOYMENT: SERVICE,
};

t.test(
  "settings: off without the chart's env, complete with it, errors name the variable",
  async t => {
    t.equal(
      webhookCertificateSettings({}),
      undefined,
      "no Secret named: no rotation (pepr dev, tests)",
    );
    t.same(webhookCertificateSettings(chartEnv), {
      namespace: NAMESPACE,
      service: SERVICE,
      secret: "gw-blixt-tls",
      webhookConfiguration: SERVICE,
      deployment: SERVICE,
      validityDays: 365,
      renewBeforeDays: 0,
      checkIntervalSeconds: 3600,
      metricsAddress: "0.0.0.0",
      metricsPort: 9090,
    });
    t.match(
      webhookCertificateSettings({
        ...chartEnv,
        BLIXT_CONTROLLER_METRICS_ADDRESS: "127.0.0.1",
        BLIXT_CONTROLLER_METRICS_PORT: "0",
      }),
      { metricsAddress: "127.0.0.1", metricsPort: 0 },
    );
    t.throws(
      () => webhookCertificateSettings({ ...chartEnv, BLIXT_CONTROLLER_METRICS_PORT: "70000" }),
      /BLIXT_CONTROLLER_METRICS_PORT="70000": must be a port/,
    );
    t.match(
      webhookCertificateSettings({
        ...chartEnv,
        BLIXT_WEBHOOK_CERT_VALIDITY_DAYS: "90",
        BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS: "30",
        BLIXT_WEBHOOK_CERT_CHECK_SECONDS: "60",
      }),
      { validityDays: 90, renewBeforeDays: 30, checkIntervalSeconds: 60 },
    );
    t.throws(
      () => webhookCertificateSettings({ ...chartEnv, BLIXT_WEBHOOK_DEPLOYMENT: "" }),
      /BLIXT_WEBHOOK_DEPLOYMENT is not set/,
    );
    t.throws(
      () => webhookCertificateSettings({ ...chartEnv, BLIXT_WEBHOOK_CERT_VALIDITY_DAYS: "soon" }),
      /BLIXT_WEBHOOK_CERT_VALIDITY_DAYS="soon": must be a number of at least 1/,
    );
    t.throws(
      () =>
        webhookCertificateSettings({
          ...chartEnv,
          BLIXT_WEBHOOK_CERT_VALIDITY_DAYS: "30",
          BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS: "30",
        }),
      /RENEW_BEFORE_DAYS=30 must be less than BLIXT_WEBHOOK_CERT_VALIDITY_DAYS=30/,
      "a threshold past the lifetime would renew at every check",
    );
    t.same(serviceDnsNames(SERVICE, NAMESPACE), NAMES, "the names the chart's certificate has");
  },
);

t.test("renewal decision: a third of the lifetime by default, or renewBeforeDays", async t => {
  const issued = new Date("2026-01-01T00:00:00Z");
  const validity = { notBefore: issued, notAfter: new Date(issued.getTime() + 365 * DAY) };
  const at = (days: number) => new Date(issued.getTime() + days * DAY);
  const cases: [string, Date, number, boolean][] = [
    ["just issued", at(0), 0, false],
    ["two thirds through, less a day", at(242), 0, false],
    ["two thirds through, plus a day", at(244.5), 0, true],
    ["expired", at(366), 0, true],
    ["31 days left, renewBeforeDays 30", at(334), 30, false],
    ["29 days left, renewBeforeDays 30", at(336), 30, true],
    ["200 days left, renewBeforeDays 300", at(165), 300, true],
  ];
  for (const [what, now, renewBeforeDays, renew] of cases) {
    t.equal(renewalDecision(validity, now, renewBeforeDays).renew, renew, what);
  }
  const fresh = renewalDecision(validity, at(0), 0);
  t.equal(fresh.daysLeft, 365);
  t.equal(
    fresh.renewAt?.toISOString(),
    new Date(validity.notAfter.getTime() - (365 * DAY) / 3).toISOString(),
    "due when a third is left",
  );
  t.match(fresh.reason, /expires on 2027-01-01T00:00:00.000Z, 365 days left; renews on /);
  const due = renewalDecision(validity, at(300), 0);
  t.equal(due.daysLeft, 65);
  t.match(due.reason, /65 days left; due since/);
  t.match(renewalDecision(validity, at(400), 0), {
    renew: true,
    daysLeft: -35,
    reason: /expired on/,
  });
  t.match(renewalDecision(undefined, at(0), 0), { renew: true, reason: "no usable certificate" });
  t.equal(
    renewalDecision(validity, new Date(issued.getTime() - 30 * 60_000), 0).renew,
    false,
    "a start half an hour ahead is clock skew, tolerated",
  );
  t.match(renewalDecision(validity, new Date(issued.getTime() - 2 * DAY), 0), {
    renew: true,
    reason: /not valid before/,
  });
});

t.test("a new CA and serving certificate, read back by node's X509Certificate", async t => {
  const issued = await issueServingCertificate({
    service: SERVICE,
    namespace: NAMESPACE,
    validityDays: 365,
    now: NOW,
  });
  const cert = new X509Certificate(issued.cert);
  const ca = new X509Certificate(issued.ca);
  t.equal(
    cert.subjectAltName,
    NAMES.map(name => `DNS:${name}`).join(", "),
    "the SANs the chart gives",
  );
  t.equal(cert.subject, `CN=${SERVICE}.${NAMESPACE}.svc`);
  t.equal(ca.subject, `CN=${SERVICE}-ca`);
  t.equal(cert.issuer, ca.subject);
  t.ok(ca.ca, "the CA is a CA");
  t.notOk(cert.ca, "the serving certificate is not");
  t.ok(cert.verify(ca.publicKey), "signed by the CA");
  t.ok(cert.checkIssued(ca), "issued by the CA");
  t.notOk(cert.verify(cert.publicKey), "not self-signed");
  t.same(cert.keyUsage, ["1.3.6.1.5.5.7.3.1"], "extended key usage: serverAuth");
  for (const name of NAMES) t.equal(cert.checkHost(name), name, `valid for ${name}`);
  t.equal(cert.checkHost("other.blixt-system.svc"), undefined);
  for (const x of [cert, ca]) {
    t.equal(
      Date.parse(x.validFrom),
      NOW.getTime() - 5 * 60_000,
      "valid from five minutes before now",
    );
    t.equal(Date.parse(x.validTo), NOW.getTime() + 365 * DAY, "for validityDays");
  }
  t.match(issued.key, /^-----BEGIN RSA PRIVATE KEY-----\n/);
  t.notMatch(issued.cert + issued.ca, /\r/, "PEM with \\n line ends, as the chart writes it");
  t.same(inspectServingCertificate(issued, NAMES), {
    validity: {
      notBefore: new Date(NOW.getTime() - 5 * 60_000),
      notAfter: new Date(NOW.getTime() + 365 * DAY),
    },
  });

  const other = await issueServingCertificate({
    service: SERVICE,
    namespace: NAMESPACE,
    validityDays: 365,
    now: NOW,
  });
  t.not(other.cert, issued.cert);
  t.not(new X509Certificate(other.cert).serialNumber, cert.serialNumber, "a fresh serial number");
  t.notOk(cert.verify(new X509Certificate(other.ca).publicKey), "each issue is a new CA");
});

t.test(
  "a TLS client that trusts the CA accepts the certificate under the Service's name",
  async t => {
    const issued = await issueServingCertificate({
      service: SERVICE,
      namespace: NAMESPACE,
      validityDays: 30,
      now: new Date(),
    });
    const server = createServer({ cert: issued.cert, key: issued.key }, socket => socket.end("ok"));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    t.teardown(() => server.close());
    const { port } = server.address() as AddressInfo;
    const handshake = (servername: string, ca: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect({ host: "127.0.0.1", port, servername, ca }, () =>
          socket.once("data", data => {
            resolve(data.toString());
            socket.end();
          }),
        );
        socket.once("error", reject);
      });
    t.equal(
      await handshake(`${SERVICE}.${NAMESPACE}.svc`, issued.ca),
      "ok",
      "the name the API server dials",
    );
    const bundle = rolloverBundle(
      (
        await issueServingCertificate({
          service: SERVICE,
          namespace: NAMESPACE,
          validityDays: 30,
          now: new Date(),
        })
      ).ca,
      issued.ca,
    );
    t.equal(
      await handshake(`${SERVICE}.${NAMESPACE}.svc`, bundle),
      "ok",
      "the rollover bundle trusts the previous certificate",
    );
    await t.rejects(
      handshake(`other.${NAMESPACE}.svc`, issued.ca),
      /altnames|Hostname/,
      "another name is refused",
    );
  },
);

t.test("inspecting a Secret: every way it can be unusable is named", async t => {
  const a = await issueServingCertificate({
    service: SERVICE,
    namespace: NAMESPACE,
    validityDays: 365,
    now: NOW,
  });
  const b = await issueServingCertificate({
    service: "elsewhere",
    namespace: NAMESPACE,
    validityDays: 365,
    now: NOW,
  });
  t.same(inspectServingCertificate({ cert: a.cert, ca: a.ca }, NAMES), {
    problem: "missing tls.key",
  });
  t.same(inspectServingCertificate({}, NAMES), { problem: "missing tls.crt, tls.key, ca.crt" });
  t.match(inspectServingCertificate({ ...a, cert: "not a certificate" }, NAMES), {
    problem: /tls.crt or ca.crt is not a PEM certificate/,
  });
  t.same(inspectServingCertificate({ ...a, ca: b.ca }, NAMES), {
    problem: "tls.crt is not signed by ca.crt",
  });
  t.same(inspectServingCertificate({ ...a, key: b.key }, NAMES), {
    problem: "tls.key does not belong to tls.crt",
  });
  t.match(inspectServingCertificate(b, NAMES), {
    problem: /^tls.crt does not name gw-blixt-admission, /,
  });
  const data = {
    "tls.crt": Buffer.from(a.cert).toString("base64"),
    "tls.key": Buffer.from(a.key).toString("base64"),
    "ca.crt": Buffer.from(a.ca).toString("base64"),
  };
  t.same(decodeSecretData(data), a, "the Secret's base64 data decoded");
  t.same(decodeSecretData(undefined), { cert: undefined, key: undefined, ca: undefined });
});

t.test("caBundle: new CA first, the previous one kept, nothing older", async t => {
  const [oldest, previous, next] = await Promise.all(
    [1, 2, 3].map(() =>
      issueServingCertificate({
        service: SERVICE,
        namespace: NAMESPACE,
        validityDays: 365,
        now: NOW,
      }),
    ),
  );
  const bundle = rolloverBundle(next.ca, previous.ca);
  t.same(pemCertificates(bundle), [next.ca, previous.ca]);
  t.ok(bundleTrusts(bundle, next.ca) && bundleTrusts(bundle, previous.ca));
  t.notOk(bundleTrusts(bundle, oldest.ca));
  t.same(pemCertificates(rolloverBundle(next.ca, next.ca)), [next.ca], "the same CA once");
  t.same(pemCertificates(rolloverBundle(next.ca, undefined)), [next.ca], "no previous CA");
  t.same(
    pemCertificates(rolloverBundle(next.ca, "garbage")),
    [next.ca],
    "an unreadable previous CA is dropped",
  );
  t.ok(bundleTrusts(previous.ca.replace(/\n/g, "\r\n"), previous.ca), "line ends do not matter");

  const expired = await issueServingCertificate({
    service: SERVICE,
    namespace: NAMESPACE,
    validityDays: 1,
    now: new Date(NOW.getTime() - 10 * DAY),
  });
  const repaired = bundleWith(previous.ca + expired.ca, next.ca, NOW);
  t.same(
    pemCertificates(repaired),
    [next.ca, previous.ca],
    "the missing CA added first; an expired one dropped",
  );
  t.same(pemCertificates(bundleWith(next.ca, next.ca, NOW)), [next.ca]);
});

t.test("the checksum is the chart's sha256sum | trunc 16 of the PEM", async t => {
  const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  t.equal(certificateChecksum(pem), createHash("sha256").update(pem).digest("hex").slice(0, 16));
  t.match(certificateChecksum(pem), /^[0-9a-f]{16}$/);
});
