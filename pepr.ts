// SPDX-License-Identifier: Apache-2.0
import { PeprModule } from "pepr";
import cfg from "./package.json" with { type: "json" };

new PeprModule(cfg, []);
