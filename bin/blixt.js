#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Launcher for `npx blixt`: the CLI is TypeScript, run through tsx without a build step.
import { register } from "tsx/esm/api";

register();
await import("../cli/blixt.ts");
