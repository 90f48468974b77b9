// SPDX-License-Identifier: Apache-2.0

package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
)

func profileCatalogue() map[string]CatalogueEntry {
	byName := map[string]CatalogueEntry{}
	for _, e := range Catalogue(tests.ConformanceTests, []suite.ConformanceProfile{
		suite.GatewayTCPConformanceProfile,
		suite.GatewayUDPConformanceProfile,
	}) {
		byName[e.Name] = e
	}
	return byName
}

func TestCatalogueSupportLevels(t *testing.T) {
	catalogue := profileCatalogue()
	cases := []struct {
		test    string
		profile string
		want    string // "" when the test is not in the profile
	}{
		{"TCPRouteWeightedRouting", "GATEWAY-TCP", SupportCore},
		{"TCPRouteWeightedRouting", "GATEWAY-UDP", ""},
		{"UDPRoute", "GATEWAY-UDP", SupportCore},
		{"UDPRoute", "GATEWAY-TCP", ""},
		// Gateway-only tests belong to every Gateway profile.
		{"GatewayObservedGenerationBump", "GATEWAY-TCP", SupportCore},
		{"GatewayObservedGenerationBump", "GATEWAY-UDP", SupportCore},
		{"GatewayStaticAddresses", "GATEWAY-TCP", SupportExtended},
		{"GatewayStaticAddresses", "GATEWAY-UDP", SupportExtended},
		// HTTPRoute is no feature of either profile.
		{"HTTPRouteSimpleSameNamespace", "GATEWAY-TCP", ""},
	}
	for _, c := range cases {
		entry, listed := catalogue[c.test]
		got := ""
		if listed {
			got = entry.Profiles[c.profile]
		}
		if got != c.want {
			t.Errorf("%s in %s: support level %q, want %q", c.test, c.profile, got, c.want)
		}
	}
}

func TestCatalogueHasNoTestOutsideTheProfiles(t *testing.T) {
	for name, entry := range profileCatalogue() {
		if len(entry.Profiles) == 0 {
			t.Errorf("%s is listed without a profile", name)
		}
		for _, f := range entry.Features {
			if f == "HTTPRoute" || f == "GRPCRoute" || f == "TLSRoute" || f == "Mesh" {
				t.Errorf("%s needs %s, which neither GATEWAY-TCP nor GATEWAY-UDP has", name, f)
			}
		}
	}
}
