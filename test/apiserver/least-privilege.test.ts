// SPDX-License-Identifier: Apache-2.0
// Secrets under the chart's RBAC, against a real kube-apiserver: the controller's
// ServiceAccount reads a certificateRef's Secret by name (and may not list Secrets anywhere
// but the release namespace), copies it into the release namespace, rewrites and deletes the
// copy; the node agent's ServiceAccount reads that copy and no Secret anywhere else (403).
import t from "tap";
import { execa } from "execa";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { K8s, kind } from "kubernetes-fluent-client";
import { parseAllDocuments } from "yaml";
import { readSecret as agentReadSecret } from "../../capabilities/agent/kube";
import {
  certificateCopyName,
  COPY_LABEL,
  DIGEST_ANNOTATION,
  type CertificateCopy,
} from "../../capabilities/gateway/certificate-copies";
import {
  kubeClusterClient,
  listCertificateCopies,
  readSecret,
} from "../../capabilities/gateway/kube";
import { certificateCopyWrites } from "../../capabilities/gateway/plan";
import type { CompileOutput, SecretInfo } from "../../capabilities/gateway/compile/types";
import {
  as,
  cacheBinDir,
  findBinaries,
  serviceAccountKubeconfig,
  startApiServer,
} from "../lib/apiserver";

// The names `helm template gw charts/blixt -n blixt-system` gives.
const NAMESPACE = "blixt-system";
const CONTROLLER_SA = "gw-blixt-controller";
const AGENT_SA = "gw-blixt-agent";
const chartDir = resolve(import.meta.dirname, "../../charts/blixt");
const b64 = (text: string) => Buffer.from(text).toString("base64");

function findHelm(): string | undefined {
  return [process.env.HELM, join(cacheBinDir(), "helm")].find(
    (candidate): candidate is string => !!candidate && existsSync(candidate),
  );
}

/** The HTTP status a call failed with (kubernetes-fluent-client throws the response), or "ok". */
async function statusOf(call: Promise<unknown>): Promise<number | string> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return (error as { status?: number }).status ?? String(error);
  }
}

const binaries = findBinaries();
const helm = findHelm();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else if (!helm) {
  t.fail("no helm binary (HELM or the local cluster's cache) to render the chart's RBAC");
} else {
  t.test("Secrets under the chart's RBAC", async t => {
    const server = await startApiServer(t, binaries);
    for (const name of [NAMESPACE, "infra", "elsewhere"])
      await K8s(kind.Namespace).Apply({ apiVersion: "v1", kind: "Namespace", metadata: { name } });

    const rendered = await execa(helm, [
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
    const ours = (o: { kind: string; metadata: { name: string; namespace?: string } }) =>
      ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"].includes(o.kind) &&
      o.metadata.namespace !== "pepr-system" &&
      [CONTROLLER_SA, AGENT_SA].includes(o.metadata.name);
    const objects = parseAllDocuments(rendered.stdout)
      .map(d => d.toJS())
      .filter(o => o && ours(o));
    t.same(objects.map(o => `${o.kind}/${o.metadata.name}`).sort(), [
      `ClusterRole/${AGENT_SA}`,
      `ClusterRole/${CONTROLLER_SA}`,
      `ClusterRoleBinding/${AGENT_SA}`,
      `ClusterRoleBinding/${CONTROLLER_SA}`,
      `Role/${AGENT_SA}`,
      `Role/${CONTROLLER_SA}`,
      `RoleBinding/${AGENT_SA}`,
      `RoleBinding/${CONTROLLER_SA}`,
    ]);
    const models: Record<string, typeof kind.Role> = {
      ClusterRole: kind.ClusterRole,
      ClusterRoleBinding: kind.ClusterRoleBinding,
      Role: kind.Role,
      RoleBinding: kind.RoleBinding,
    } as never;
    for (const o of objects) await K8s(models[o.kind]).Apply(o, { force: true });

    const secretData = (version: string) => ({
      "tls.crt": b64(`certificate ${version}`),
      "tls.key": b64(`key ${version}`),
    });
    await K8s(kind.Secret).Apply({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: "infra", name: "cert" },
      type: "kubernetes.io/tls",
      data: secretData("1"),
    });
    await K8s(kind.Secret).Apply({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: "elsewhere", name: "private" },
      type: "kubernetes.io/tls",
      data: secretData("x"),
    });

    const controller = await serviceAccountKubeconfig(server, NAMESPACE, CONTROLLER_SA);
    const agent = await serviceAccountKubeconfig(server, NAMESPACE, AGENT_SA);
    const client = kubeClusterClient({}, "blixt.dev/gateway-controller", NAMESPACE);
    const gatewayRef = { namespace: "infra", name: "web" };
    const copy: CertificateCopy = {
      namespace: NAMESPACE,
      name: certificateCopyName(gatewayRef, { namespace: "infra", name: "cert" }),
      gateway: gatewayRef,
      source: { namespace: "infra", name: "cert" },
      listeners: ["https"],
    };
    const output = { certificateCopies: [copy] } as unknown as CompileOutput;

    /** What the controller does each pass: read the ref, list the copies, make the plan's copy writes. */
    const pass = () =>
      as(controller, async () => {
        const read = await readSecret({ namespace: "infra", name: "cert" });
        t.notOk(
          read.problem,
          `the controller reads the certificateRef by name (${read.problem ?? "ok"})`,
        );
        const secrets = [read.secret!] as SecretInfo[];
        const certificateCopies = await listCertificateCopies(NAMESPACE);
        const writes = certificateCopyWrites({ secrets, certificateCopies } as never, output);
        for (const write of [...writes.apply, ...writes.remove]) await client.execute(write);
        return writes;
      });

    await t.test("the controller copies the certificate into the release namespace", async t => {
      const writes = await pass();
      t.equal(writes.apply.length, 1);
      const made = await K8s(kind.Secret).InNamespace(NAMESPACE).Get(copy.name);
      t.same(made.data, secretData("1"), "the source's data");
      t.equal(made.type, "kubernetes.io/tls");
      t.equal(made.metadata?.labels?.[COPY_LABEL], "true");
      t.equal(made.metadata?.annotations?.["blixt.dev/source"], "infra/cert");
      t.same((await pass()).apply, [], "a second pass changes nothing");
    });

    await t.test("a renewed source is copied again", async t => {
      await K8s(kind.Secret).Apply({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { namespace: "infra", name: "cert" },
        type: "kubernetes.io/tls",
        data: secretData("2"),
      });
      t.equal((await pass()).apply.length, 1);
      const made = await K8s(kind.Secret).InNamespace(NAMESPACE).Get(copy.name);
      t.same(made.data, secretData("2"));
      t.ok(made.metadata?.annotations?.[DIGEST_ANNOTATION]);
    });

    await t.test("the agent reads the copy, and no Secret elsewhere", async t => {
      const read = await as(agent, () => agentReadSecret(NAMESPACE, copy.name));
      t.same(read?.data, secretData("2"));
      t.equal(
        await statusOf(as(agent, () => agentReadSecret("infra", "cert"))),
        403,
        "the source itself: 403",
      );
      t.equal(
        await statusOf(as(agent, () => agentReadSecret("elsewhere", "private"))),
        403,
        "any other namespace: 403",
      );
      t.equal(
        await statusOf(as(agent, () => K8s(kind.Secret).InNamespace(NAMESPACE).Get())),
        403,
        "not even a list of its own namespace",
      );
      await t.rejects(
        as(agent, () => agentReadSecret(NAMESPACE, "../../../../api/v1/secrets")),
        /is not a DNS-1123 subdomain/,
        "a name that is a path is refused before any request",
      );
    });

    await t.test("the controller may not list Secrets outside the release namespace", async t => {
      t.equal(
        await statusOf(as(controller, () => K8s(kind.Secret).Get())),
        403,
        "cluster-wide list: 403",
      );
      t.equal(
        await statusOf(as(controller, () => K8s(kind.Secret).InNamespace("elsewhere").Get())),
        403,
        "another namespace's list: 403",
      );
      t.equal(
        await statusOf(
          as(controller, () =>
            K8s(kind.Secret).Create({
              apiVersion: "v1",
              kind: "Secret",
              metadata: { namespace: "elsewhere", name: "planted" },
            }),
          ),
        ),
        403,
        "no writes elsewhere",
      );
    });

    await t.test("a copy nothing names any more is deleted, by label", async t => {
      const foreign = {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { namespace: NAMESPACE, name: "someone-elses" },
        data: { a: b64("b") },
      };
      await K8s(kind.Secret).Apply(foreign);
      const none = { certificateCopies: [] } as unknown as CompileOutput;
      await as(controller, async () => {
        const writes = certificateCopyWrites(
          { secrets: [], certificateCopies: await listCertificateCopies(NAMESPACE) } as never,
          none,
        );
        t.same(
          writes.remove.map(w => w.name),
          [copy.name],
        );
        for (const write of writes.remove) await client.execute(write);
      });
      t.equal(await statusOf(K8s(kind.Secret).InNamespace(NAMESPACE).Get(copy.name)), 404);
      t.ok(
        await K8s(kind.Secret).InNamespace(NAMESPACE).Get("someone-elses"),
        "an unlabelled Secret stays",
      );
    });
  });
}
