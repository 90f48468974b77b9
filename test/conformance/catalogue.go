// SPDX-License-Identifier: Apache-2.0

package conformance

import (
	"slices"

	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// Support levels, in the words of the conformance report.
const (
	SupportCore     = "core"
	SupportExtended = "extended"
)

// CatalogueEntry is one upstream conformance test and the profiles it belongs to.
type CatalogueEntry struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Features    []string `json:"features"`
	Provisional bool     `json:"provisional,omitempty"`
	// Profiles maps a profile name (GATEWAY-TCP, GATEWAY-UDP) to the test's support level there.
	Profiles map[string]string `json:"profiles"`
}

// Catalogue lists the tests that belong to at least one of the given profiles, in the
// order the suite runs them. It applies the suite's own rules (utils/suite: a test belongs to
// a profile when every feature it needs is a core or extended feature of the profile, and
// it is extended there as soon as one of those features is not core), which the suite keeps
// private; catalogue_test.go pins them against tests whose level is known.
func Catalogue(tests []suite.ConformanceTest, profiles []suite.ConformanceProfile) []CatalogueEntry {
	var entries []CatalogueEntry
	for _, test := range tests {
		levels := map[string]string{}
		for _, profile := range profiles {
			if level, ok := supportLevel(test.Features, profile); ok {
				levels[string(profile.Name)] = level
			}
		}
		if len(levels) == 0 {
			continue
		}
		names := make([]string, 0, len(test.Features))
		for _, f := range test.Features {
			names = append(names, string(f))
		}
		slices.Sort(names)
		entries = append(entries, CatalogueEntry{
			Name:        test.ShortName,
			Description: test.Description,
			Features:    names,
			Provisional: test.Provisional,
			Profiles:    levels,
		})
	}
	return entries
}

// supportLevel says whether a test needing testFeatures belongs to profile, and at which level.
func supportLevel(testFeatures []features.FeatureName, profile suite.ConformanceProfile) (string, bool) {
	level := SupportCore
	for _, f := range testFeatures {
		switch {
		case profile.CoreFeatures.Has(f):
		case profile.ExtendedFeatures.Has(f):
			level = SupportExtended
		default:
			return "", false
		}
	}
	return level, true
}
