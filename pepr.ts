// SPDX-License-Identifier: Apache-2.0
// The blixt Pepr module: the role (capabilities/roles.ts) decides which capabilities run here.
import { PeprModule } from "pepr";
import cfg from "./package.json" with { type: "json" };
import { capabilitiesFor, resolveRoles } from "./capabilities/roles.js";

const roleModule = capabilitiesFor(resolveRoles(process.env));
new PeprModule(cfg, roleModule.capabilities, roleModule.peprOptions);
roleModule.start();
