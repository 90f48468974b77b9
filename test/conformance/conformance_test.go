// SPDX-License-Identifier: Apache-2.0

package conformance

import (
	"encoding/json"
	"flag"
	"os"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
)

// blixt's flag; every other flag is the suite's own (conformance/utils/flags).
var catalogueOutput = flag.String("catalogue-output", "",
	"write the GATEWAY-TCP and GATEWAY-UDP test catalogue (JSON) to this file")

// TestConformance runs the upstream suite against the cluster of the current kubeconfig.
func TestConformance(t *testing.T) {
	// Without -gateway-class the suite would wait for a GatewayClass named
	// "gateway-conformance" that no cluster has; hack/conformance.sh always passes it.
	if !flagSet("gateway-class") {
		t.Skip("pass -gateway-class=blixt (hack/conformance.sh does) to run the suite against a cluster")
	}
	conformance.RunConformanceWithOptions(t, conformance.DefaultOptions(t))
}

// TestWriteCatalogue writes the catalogue that hack/conformance.sh turns into the results
// table; it needs no cluster.
func TestWriteCatalogue(t *testing.T) {
	if *catalogueOutput == "" {
		t.Skip("pass -catalogue-output=FILE to write the catalogue")
	}
	catalogue := Catalogue(tests.ConformanceTests, []suite.ConformanceProfile{
		suite.GatewayTCPConformanceProfile,
		suite.GatewayUDPConformanceProfile,
	})
	data, err := json.MarshalIndent(catalogue, "", "  ")
	if err != nil {
		t.Fatalf("encoding the catalogue: %v", err)
	}
	if err := os.WriteFile(*catalogueOutput, append(data, '\n'), 0o644); err != nil {
		t.Fatalf("writing the catalogue to %s: %v", *catalogueOutput, err)
	}
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
