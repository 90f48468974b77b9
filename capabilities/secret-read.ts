// SPDX-License-Identifier: Apache-2.0
/**
 * Reading one Secret by name, for the controller (certificateRefs) and the node agent (the
 * copies in its namespace) alike. kubernetes-fluent-client puts a name into the URL as it is,
 * and the URL parser resolves "..": so a name or namespace no object can have is refused before
 * any request, what is sent is encoded all the same, and an answer that is not that very
 * Secret is not taken for it.
 */
import { K8s, kind } from "kubernetes-fluent-client";
import { dns1123LabelProblem, dns1123SubdomainProblem } from "./gateway/names.js";

export type SecretByName = { secret?: InstanceType<typeof kind.Secret> } | { problem: string };

/** The Secret, `{}` when it does not exist, or `{ problem }` when it was not asked for or not what came back. Other API errors are thrown. */
export async function getSecretByName(namespace: string, name: string): Promise<SecretByName> {
  const namespaceProblem = dns1123LabelProblem(namespace);
  const nameProblem = dns1123SubdomainProblem(name);
  if (namespaceProblem) return { problem: `namespace ${namespaceProblem}` };
  if (nameProblem) return { problem: `name ${nameProblem}` };
  let secret: InstanceType<typeof kind.Secret> | undefined;
  try {
    secret = await K8s(kind.Secret)
      .InNamespace(encodeURIComponent(namespace))
      .Get(encodeURIComponent(name));
  } catch (error) {
    if ((error as { status?: number }).status === 404) return {};
    throw error;
  }
  if (secret?.metadata?.namespace !== namespace || secret.metadata.name !== name) {
    return {
      problem: `the API server answered with ${secret?.kind ?? "an object"} ${secret?.metadata?.namespace ?? ""}/${secret?.metadata?.name ?? ""}, not this Secret`,
    };
  }
  return { secret };
}
