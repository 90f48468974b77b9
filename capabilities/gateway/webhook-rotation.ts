// SPDX-License-Identifier: Apache-2.0
/**
 * Keeps the admission webhook's serving certificate valid without a `helm upgrade`. The
 * controller checks the Secret at start and every checkIntervalSeconds; when the certificate
 * is due (webhook-certificate.ts decides), it
 *   1. puts the new CA into the caBundle of every webhook of blixt's ValidatingWebhookConfiguration,
 *      beside the CA of the certificate the running pods serve (so the API server trusts both
 *      while the pods restart),
 *   2. writes the new certificate, key and CA into the Secret (only if nobody changed the
 *      Secret since it was read), and
 *   3. restarts the admission pods onto it: Pepr 1.1.4 reads its certificate once, when its
 *      server starts, so the Deployment's pod template gets the new certificate's checksum in
 *      an annotation (as `kubectl rollout restart` sets one), which rolls the pods.
 * In that order, no pod can serve a certificate the API server does not yet trust. Every check
 * also repairs a caBundle that lacks the Secret's CA and re-asserts the checksum, so a check
 * interrupted halfway is finished by the next one.
 *
 * The chart reuses what this writes on `helm upgrade` (it reads the Secret and the caBundle
 * back), so Helm's server-side apply and this controller never disagree about those fields.
 */
import { createServer, type Server } from "node:http";
import { K8s, kind } from "kubernetes-fluent-client";
import { Counter, Gauge, Registry } from "prom-client";
import {
  CERTIFICATE_CHECKSUM_ANNOTATION,
  bundleTrusts,
  bundleWith,
  certificateChecksum,
  decodeSecretData,
  inspectServingCertificate,
  issueServingCertificate,
  renewalDecision,
  rolloverBundle,
  serviceDnsNames,
  type ServingCertificate,
  type WebhookCertificateSettings,
} from "./webhook-certificate";

export interface RotationLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface CheckResult {
  renewed: boolean;
  /** When the certificate now in the Secret expires, and whole days until then. */
  notAfter?: Date;
  daysLeft?: number;
  renewAt?: Date;
}

/** Retry a failed check this soon (or at the regular interval, if that is sooner). */
const RETRY_SECONDS = 60;

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
/** A JSON-pointer path segment: "/" and "~" escaped. */
const pointer = (segment: string) => segment.replace(/~/g, "~0").replace(/\//g, "~1");

function describe(error: unknown): string {
  const e = error as {
    status?: number;
    statusText?: string;
    data?: { message?: string };
    message?: string;
  };
  return (
    e?.data?.message ??
    e?.message ??
    (e?.status ? `HTTP ${e.status} ${e.statusText ?? ""}`.trim() : String(error))
  );
}

/** The controller's metrics about the webhook certificate; alert on the expiry, not on renewals. */
export class WebhookCertificateMetrics {
  readonly registry = new Registry();
  readonly expiry: Gauge;
  readonly renewals: Counter;
  readonly checkErrors: Counter;

  constructor() {
    const registers = [this.registry];
    this.expiry = new Gauge({
      name: "blixt_webhook_certificate_expiry_timestamp_seconds",
      help: "When the admission webhook's serving certificate (or its CA, if sooner) in the Secret expires, Unix seconds; alert on it minus time() being under a few weeks",
      registers,
    });
    this.renewals = new Counter({
      name: "blixt_webhook_certificate_renewals_total",
      help: "Renewals of the admission webhook's certificate by the controller",
      registers,
    });
    this.checkErrors = new Counter({
      name: "blixt_webhook_certificate_check_errors_total",
      help: "Checks or renewals of the admission webhook's certificate that failed (retried a minute later)",
      registers,
    });
  }
}

/** Serves GET /metrics of `registry` on address:port; anything else is 404. */
export async function serveControllerMetrics(
  registry: Registry,
  port: number,
  address: string,
): Promise<Server> {
  const server = createServer((req, res) => {
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "Content-Type": type });
      res.end(body);
    };
    if (
      (req.url ?? "/").split("?")[0] !== "/metrics" ||
      (req.method !== "GET" && req.method !== "HEAD")
    )
      return reply(404, "not found: try GET /metrics\n");
    registry.metrics().then(
      text => reply(200, text, registry.contentType),
      (error: unknown) => reply(500, `reading metrics failed: ${describe(error)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, address, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

export class WebhookCertificateRotation {
  readonly #settings: WebhookCertificateSettings;
  readonly #log: RotationLog;
  readonly #now: () => Date;
  readonly metrics = new WebhookCertificateMetrics();
  #timer: NodeJS.Timeout | undefined;
  #server: Server | undefined;
  #stopped = false;

  constructor(
    settings: WebhookCertificateSettings,
    log: RotationLog,
    now: () => Date = () => new Date(),
  ) {
    this.#settings = settings;
    this.#log = log;
    this.#now = now;
  }

  get #secretName(): string {
    return `Secret ${this.#settings.namespace}/${this.#settings.secret}`;
  }

  /** One check: renews when due, else repairs what a half-finished renewal left. */
  async check(): Promise<CheckResult> {
    const s = this.#settings;
    let secret;
    try {
      secret = await K8s(kind.Secret).InNamespace(s.namespace).Get(s.secret);
    } catch (error) {
      throw new Error(
        `webhook certificate: cannot read ${this.#secretName} (${describe(error)}); the chart creates it: run helm upgrade to restore it`,
      );
    }
    const current = decodeSecretData(secret.data);
    const inspected = inspectServingCertificate(current, serviceDnsNames(s.service, s.namespace));
    const validity = "validity" in inspected ? inspected.validity : undefined;
    const decision = renewalDecision(validity, this.#now(), s.renewBeforeDays);

    if (!decision.renew) {
      await this.#ensureTrusted(current.ca!);
      await this.#restartOnto(current.cert!);
      this.#log.info(`webhook certificate (${this.#secretName}): ${decision.reason}`);
      if (validity) this.metrics.expiry.set(validity.notAfter.getTime() / 1000);
      return {
        renewed: false,
        notAfter: validity?.notAfter,
        daysLeft: decision.daysLeft,
        renewAt: decision.renewAt,
      };
    }

    const why =
      "problem" in inspected
        ? `${this.#secretName} is unusable: ${inspected.problem}`
        : decision.reason;
    this.#log.info(`webhook certificate (${this.#secretName}): renewing, ${why}`);
    const issued = await issueServingCertificate({
      service: s.service,
      namespace: s.namespace,
      validityDays: s.validityDays,
      now: this.#now(),
    });
    await this.#trust(rolloverBundle(issued.ca, current.ca));
    await this.#writeSecret(secret, issued);
    await this.#restartOnto(issued.cert);
    const renewed = inspectServingCertificate(issued, serviceDnsNames(s.service, s.namespace));
    const after = renewalDecision(
      "validity" in renewed ? renewed.validity : undefined,
      this.#now(),
      s.renewBeforeDays,
    );
    this.metrics.renewals.inc();
    if ("validity" in renewed) this.metrics.expiry.set(renewed.validity.notAfter.getTime() / 1000);
    this.#log.info(
      `webhook certificate (${this.#secretName}): renewed; the new one ${after.reason}; ValidatingWebhookConfiguration ${s.webhookConfiguration} trusts the new and the previous CA; Deployment ${s.namespace}/${s.deployment} restarts onto it`,
    );
    return {
      renewed: true,
      notAfter: "validity" in renewed ? renewed.validity.notAfter : undefined,
      daysLeft: after.daysLeft,
      renewAt: after.renewAt,
    };
  }

  /**
   * Serves the metrics (unless metricsPort is 0), checks now, then every checkIntervalSeconds
   * (sooner after a failure); never throws.
   */
  start(): void {
    const { metricsPort, metricsAddress } = this.#settings;
    if (metricsPort > 0) {
      serveControllerMetrics(this.metrics.registry, metricsPort, metricsAddress).then(
        server => (this.#stopped ? server.close() : (this.#server = server)),
        (error: unknown) =>
          this.#log.error(
            `controller metrics: cannot listen on ${metricsAddress}:${metricsPort} (${describe(error)}); set controller.metrics.port in the chart`,
          ),
      );
    }
    const run = async () => {
      let delay = this.#settings.checkIntervalSeconds;
      try {
        await this.check();
      } catch (error) {
        delay = Math.min(delay, RETRY_SECONDS);
        this.metrics.checkErrors.inc();
        this.#log.error(`${describe(error)}; retrying in ${delay} s`);
      }
      if (this.#stopped) return;
      this.#timer = setTimeout(() => void run(), delay * 1000);
      this.#timer.unref();
    };
    void run();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#server?.close();
  }

  /** Sets the caBundle of every webhook of the configuration. */
  async #trust(bundle: string): Promise<void> {
    const s = this.#settings;
    const configuration = await this.#webhookConfiguration();
    const webhooks = configuration.webhooks ?? [];
    await K8s(kind.ValidatingWebhookConfiguration, { name: s.webhookConfiguration }).Patch([
      {
        op: "test",
        path: "/metadata/resourceVersion",
        value: configuration.metadata!.resourceVersion,
      },
      ...webhooks.map((_, i) => ({
        op: "add" as const,
        path: `/webhooks/${i}/clientConfig/caBundle`,
        value: b64(bundle),
      })),
    ]);
  }

  /** Adds the Secret's CA to every webhook whose caBundle lacks it. */
  async #ensureTrusted(ca: string): Promise<void> {
    const s = this.#settings;
    const configuration = await this.#webhookConfiguration();
    const now = this.#now();
    const repairs = (configuration.webhooks ?? []).flatMap((webhook, i) => {
      const bundle = webhook.clientConfig?.caBundle
        ? Buffer.from(webhook.clientConfig.caBundle, "base64").toString("utf8")
        : "";
      if (bundleTrusts(bundle, ca)) return [];
      this.#log.warn(
        `webhook certificate: webhook ${webhook.name} of ValidatingWebhookConfiguration ${s.webhookConfiguration} did not trust the CA in ${this.#secretName}; adding it`,
      );
      return [
        {
          op: "add" as const,
          path: `/webhooks/${i}/clientConfig/caBundle`,
          value: b64(bundleWith(bundle, ca, now)),
        },
      ];
    });
    if (!repairs.length) return;
    await K8s(kind.ValidatingWebhookConfiguration, { name: s.webhookConfiguration }).Patch([
      {
        op: "test",
        path: "/metadata/resourceVersion",
        value: configuration.metadata!.resourceVersion,
      },
      ...repairs,
    ]);
  }

  async #webhookConfiguration() {
    const s = this.#settings;
    try {
      const configuration = await K8s(kind.ValidatingWebhookConfiguration).Get(
        s.webhookConfiguration,
      );
      if (!configuration.webhooks?.length) throw new Error("it has no webhooks");
      return configuration;
    } catch (error) {
      throw new Error(
        `webhook certificate: cannot read ValidatingWebhookConfiguration ${s.webhookConfiguration} (${describe(error)}); the chart creates it: run helm upgrade to restore it`,
      );
    }
  }

  /** Writes the new certificate, only over the version of the Secret that was read. */
  async #writeSecret(
    secret: InstanceType<typeof kind.Secret>,
    issued: ServingCertificate,
  ): Promise<void> {
    const s = this.#settings;
    const data = {
      ...(secret.data ?? {}),
      "tls.crt": b64(issued.cert),
      "tls.key": b64(issued.key),
      "ca.crt": b64(issued.ca),
    };
    const checksum = certificateChecksum(issued.cert);
    const annotation = secret.metadata?.annotations
      ? {
          op: "add" as const,
          path: `/metadata/annotations/${pointer(CERTIFICATE_CHECKSUM_ANNOTATION)}`,
          value: checksum,
        }
      : {
          op: "add" as const,
          path: "/metadata/annotations",
          value: { [CERTIFICATE_CHECKSUM_ANNOTATION]: checksum },
        };
    try {
      await K8s(kind.Secret, { name: s.secret, namespace: s.namespace }).Patch([
        { op: "test", path: "/metadata/resourceVersion", value: secret.metadata!.resourceVersion },
        { op: "add", path: "/data", value: data },
        annotation,
      ]);
    } catch (error) {
      throw new Error(
        `webhook certificate: cannot write ${this.#secretName} (${describe(error)}); the next check tries again`,
      );
    }
  }

  /**
   * The admission pods' template carries the checksum of the certificate they should serve; a
   * new value rolls them, the same value changes nothing. A JSON patch of that one annotation
   * (the chart renders the template's annotations, so the map exists).
   */
  async #restartOnto(cert: string): Promise<void> {
    const s = this.#settings;
    try {
      await K8s(kind.Deployment, { name: s.deployment, namespace: s.namespace }).Patch([
        {
          op: "add",
          path: `/spec/template/metadata/annotations/${pointer(CERTIFICATE_CHECKSUM_ANNOTATION)}`,
          value: certificateChecksum(cert),
        },
      ]);
    } catch (error) {
      throw new Error(
        `webhook certificate: cannot restart Deployment ${s.namespace}/${s.deployment} onto the certificate in ${this.#secretName} (${describe(error)}); its pod template needs metadata.annotations, as the chart renders it`,
      );
    }
  }
}
