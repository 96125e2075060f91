package main

import (
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestVerifyAsCIGate: policies recommended from the samples pass verify
// (exit 0); a change to one policy file that breaks one observed edge
// (details-v1's ingress names productpage with a typo) fails it with exit status 1,
// one GitHub annotation on that file at its ingress rules, and one failing
// JUnit test case; unreadable policies exit 2.
func TestVerifyAsCIGate(t *testing.T) {
	flows := "../../testdata/hubble/basic-sample-400-tcp-flows.json"
	dir := filepath.Join(t.TempDir(), "policies")
	if out, err := run(t, "recommend", "--hubble-file", flows, "--out", dir, "--log-level", "warn"); err != nil {
		t.Fatalf("recommend: %v\n%s", err, out)
	}
	junit := filepath.Join(t.TempDir(), "verify.xml")
	verify := func() (string, int) {
		out, err := run(t, "verify", "--hubble-file", flows, "--policies", dir, "-o", "github", "--junit", junit, "--log-level", "warn")
		var ec exitCode
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ec):
			return out, int(ec)
		}
		t.Fatalf("verify: %v\n%s", err, out)
		return "", -1
	}
	if out, code := verify(); code != 0 || strings.Contains(out, "::error") {
		t.Fatalf("the recommended policies fail verify (exit %d):\n%s", code, out)
	}

	file := filepath.Join(dir, "bookinfo", "details-v1.yaml")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// The ingress rule names productpage by label: a typo drops it.
	broken := strings.Replace(string(raw), "app: productpage\n", "app: product-page\n", 1)
	if broken == string(raw) {
		t.Fatalf("no productpage peer in %s:\n%s", file, raw)
	}
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	ingress := 0
	for i, l := range strings.Split(broken, "\n") {
		if strings.TrimSpace(l) == "ingress:" {
			ingress = i + 1
			break
		}
	}
	out, code := verify()
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	annotations := regexp.MustCompile(`(?m)^::error file=([^,]+),line=(\d+),title=[^:]+::(.*)$`).FindAllStringSubmatch(out, -1)
	if len(annotations) != 1 || strings.Count(out, "::error") != 1 {
		t.Fatalf("want one annotation, got:\n%s", out)
	}
	a := annotations[0]
	if a[1] != file || a[2] != strconv.Itoa(ingress) || !strings.Contains(a[3], "bookinfo/productpage-v1 → bookinfo/details-v1 TCP/9080") {
		t.Errorf("annotation %q, want on %s line %d (its ingress rules) for productpage → details:9080", a[0], file, ingress)
	}

	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Text string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	x, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(x, &suites); err != nil {
		t.Fatalf("JUnit XML: %v\n%s", err, x)
	}
	if len(suites.Suites) != 1 || suites.Suites[0].Failures != 1 || suites.Suites[0].Tests < 5 {
		t.Fatalf("JUnit: %s", x)
	}
	failing := 0
	for _, c := range suites.Suites[0].Cases {
		if c.Failure != nil {
			failing++
			if c.Name != "bookinfo/productpage-v1 → bookinfo/details-v1 TCP/9080" || !strings.Contains(c.Failure.Text, file) {
				t.Errorf("failing case %q: %s", c.Name, c.Failure.Text)
			}
		}
	}
	if failing != 1 {
		t.Errorf("%d failing test cases, want 1", failing)
	}

	// A policy file that does not parse: the check cannot be made.
	if err := os.WriteFile(file, []byte("kind: NetworkPolicy\nspec: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := verify(); code != 2 {
		t.Errorf("broken policy file: exit %d, want 2:\n%s", code, out)
	}
}
