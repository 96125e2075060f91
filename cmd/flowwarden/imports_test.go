package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// importDebt lists production imports that break the import direction
// and are still to be removed; it must match exactly (a new violation
// fails the test, and so does a fixed one still listed). Empty: findings
// name their flows with schema.FlowSelector (rendered by schema/clickhouse),
// the page and the PR body get stored data through what cmd passes them.
var importDebt = []string{}

// components are the packages between cmd and schema (DESIGN.md, "Import
// direction"); each may import schema, its own subpackages and the
// neutral schema/freeport, never the storage layer (schema/clickhouse…)
// nor another component. Packages named …test are test helpers (amtest,
// chtest, netnstest): they may start real servers and open storage, and
// no production package may import them.
var components = []string{"ingest", "analyze", "alerting", "enforcer"}

// TestImportDirection checks the import direction over the production
// packages (go list; test files are not production): schema imports no
// component, components import schema but not storage nor each other, and
// only cmd wires.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "github.com/flowwarden/flowwarden/...").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	const mod = "github.com/flowwarden/flowwarden/"
	top := func(p string) string { return strings.SplitN(p, "/", 2)[0] }
	helper := func(p string) bool { return strings.HasSuffix(p[strings.LastIndex(p, "/")+1:], "test") }
	var got []string
	packages := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], mod)
		if !ok || strings.HasPrefix(pkg, "testdata/") {
			continue
		}
		packages++
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, mod)
			if !ours {
				continue
			}
			bad := ""
			switch {
			case helper(dep) && !helper(pkg):
				bad = "a production package imports a test helper"
			case helper(pkg):
				// Test helpers may wire what a test needs.
			case top(pkg) == "schema":
				if slices.Contains(components, top(dep)) || top(dep) == "cmd" {
					bad = "schema imports a component"
				}
			case slices.Contains(components, top(pkg)):
				switch {
				case dep == "schema" || dep == "schema/freeport" || top(dep) == top(pkg):
				default:
					bad = "a component imports storage or another component"
				}
			}
			if bad != "" {
				got = append(got, fmt.Sprintf("%s -> %s", pkg, dep))
				if !slices.Contains(importDebt, fmt.Sprintf("%s -> %s", pkg, dep)) {
					t.Errorf("%s imports %s: %s (DESIGN.md, import direction: declare a small interface that cmd satisfies)", pkg, dep, bad)
				}
			}
		}
	}
	if packages < 20 {
		t.Fatalf("go list named %d packages: not the module", packages)
	}
	for _, d := range importDebt {
		if !slices.Contains(got, d) {
			t.Errorf("%q no longer happens: remove it from importDebt", d)
		}
	}
}
