// SPDX-License-Identifier: Apache-2.0

// Package conformance runs the upstream Gateway API conformance suite (v1.6.3) against
// blixt, the way implementations run it: conformance.DefaultOptions reads the suite's own
// flags (-gateway-class, -supported-features, -conformance-profiles, -report-output, ...)
// and conformance.RunConformanceWithOptions runs it. hack/conformance.sh passes the flags.
//
// Besides the suite, the package lists every test of the GATEWAY-TCP and GATEWAY-UDP
// profiles and whether each is core or extended there (the catalogue), so blixt's results
// table covers every test of both profiles, including those a run skipped or never reached.
package conformance
