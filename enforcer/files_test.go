package enforcer

import (
	"strings"
	"testing"
)

// TestParsePoliciesSplitsAsKubectl: documents split on "---" lines only,
// as apimachinery's reader (kubectl's) splits them: a separator with a
// comment, a leading separator, CRLF line ends, comment-only documents;
// "---" inside a value is no separator, and a "----" line is refused
// rather than taken for a separator.
func TestParsePoliciesSplitsAsKubectl(t *testing.T) {
	pol := func(name string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: shop\n" +
			"  annotations:\n    note: |\n      a---b\n      --- indented, not a separator\nspec:\n  podSelector: {}\n"
	}
	in := "# generated\n---\n" + pol("a") + "--- # the second\n" + pol("b") + "---\n# comments only\n---\n" + pol("c")
	for _, raw := range []string{in, strings.ReplaceAll(in, "\n", "\r\n")} {
		nps, err := ParsePolicies([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if len(nps) != 3 || nps[0].Name != "a" || nps[1].Name != "b" || nps[2].Name != "c" {
			t.Fatalf("got %d policies: %+v", len(nps), nps)
		}
		if note := nps[1].Annotations["note"]; !strings.Contains(note, "--- indented") {
			t.Fatalf("annotation cut at the dashes: %q", note)
		}
	}
	if _, err := ParsePolicies([]byte(pol("a") + "----\n" + pol("b"))); err == nil {
		t.Fatal(`a "----" line was taken for a separator`)
	}
}
