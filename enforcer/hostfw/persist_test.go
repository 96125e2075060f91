package hostfw

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/ingest/netnstest"
)

// TestConfirmedRulesetSurvivesAReboot keeps a generated ruleset, "reboots"
// (deletes the table), and restores it from the file: the same rules,
// enforcing again. A table that exists is never touched.
func TestConfirmedRulesetSurvivesAReboot(t *testing.T) {
	p := netnstest.NewPair(t)
	rs := observe(t, p)
	conn := nftConn(t, p.Node)
	path := filepath.Join(t.TempDir(), "state", ConfirmedFile)

	if restored, _, err := RestoreIfMissing(conn, path); err != nil || restored {
		t.Fatalf("with no file kept: restored=%v err=%v", restored, err)
	}
	confirmedAt := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	if err := SaveConfirmed(path, rs, confirmedAt); err != nil {
		t.Fatal(err)
	}
	back, at, err := LoadConfirmed(path)
	if err != nil {
		t.Fatal(err)
	}
	if !at.Equal(confirmedAt) || !reflect.DeepEqual(normalized(back), normalized(rs)) {
		t.Fatalf("read back %s:\n%+v\nwant:\n%+v", at, back, rs)
	}

	// The table is there (applied and confirmed): left alone.
	if err := Install(conn, rs); err != nil {
		t.Fatal(err)
	}
	applied, _ := Describe(conn)
	if restored, _, err := RestoreIfMissing(conn, path); err != nil || restored {
		t.Fatalf("with the table present: restored=%v err=%v", restored, err)
	}
	// A reboot clears it: the quiet port answers again...
	if err := Install(conn, nil); err != nil {
		t.Fatal(err)
	}
	if err := reachable(p, quietPort); err != nil {
		t.Fatalf("without the table the quiet port should answer: %v", err)
	}
	// ...until the kept ruleset is restored, rule for rule.
	restored, at, err := RestoreIfMissing(conn, path)
	if err != nil || !restored || !at.Equal(confirmedAt) {
		t.Fatalf("after the reboot: restored=%v at=%s err=%v", restored, at, err)
	}
	if now, _ := Describe(conn); now != applied {
		t.Errorf("restored table differs from the confirmed one:\n%s\nwant:\n%s", now, applied)
	}
	if err := reachable(p, servedPort); err != nil {
		t.Errorf("the observed port is blocked after the restore: %v", err)
	}
	if err := reachable(p, quietPort); err == nil {
		t.Error("the quiet port answers after the restore")
	}
}

// normalized drops the monotonic clock and location details JSON does not keep.
func normalized(rs *Ruleset) Ruleset {
	out := *rs
	out.First, out.Last = out.First.UTC().Round(0), out.Last.UTC().Round(0)
	out.Rules = append([]Rule(nil), rs.Rules...)
	for i := range out.Rules {
		out.Rules[i].First, out.Rules[i].Last = out.Rules[i].First.UTC().Round(0), out.Rules[i].Last.UTC().Round(0)
	}
	return out
}

func TestLoadConfirmedRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadConfirmed(filepath.Join(dir, "none.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	for name, c := range map[string]struct{ content, want string }{
		"truncated":   {`{"version": 1, "ruleset": {"Rules": [`, "unexpected end of JSON"},
		"version":     {`{"version": 2, "ruleset": {"Rules": [{"Verdict": "accept"}]}}`, "not a version 1 ruleset"},
		"empty":       {`{"version": 1, "ruleset": {"Rules": []}}`, "not a version 1 ruleset"},
		"bad verdict": {`{"version": 1, "ruleset": {"Rules": [{"Verdict": "maybe"}]}}`, `rule 1`},
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadConfirmed(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}
