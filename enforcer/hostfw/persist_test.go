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

// TestConfirmedRulesetSurvivesAReboot keeps a generated ruleset, removes
// the table during the same boot (an operator turning it off: left off),
// then "reboots" (a new boot ID, the table gone) and restores it from the
// file: the same rules, enforcing again. A table that exists is never
// touched.
func TestConfirmedRulesetSurvivesAReboot(t *testing.T) {
	p := netnstest.NewPair(t)
	rs := observe(t, p)
	conn := nftConn(t, p.Node)
	path := filepath.Join(t.TempDir(), "state", ConfirmedFile)
	boot := filepath.Join(t.TempDir(), "boot_id")
	setBoot := func(id string) {
		if err := os.WriteFile(boot, []byte(id+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bootIDPath = boot
	defer func() { bootIDPath = "/proc/sys/kernel/random/boot_id" }()
	setBoot("boot-1")

	if outcome, _, err := RestoreIfMissing(conn, path); err != nil || outcome != NothingKept {
		t.Fatalf("with no file kept: %v, %v", outcome, err)
	}
	confirmedAt := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	if err := Install(conn, rs); err != nil {
		t.Fatal(err)
	}
	if err := SaveConfirmed(path, rs, confirmedAt); err != nil {
		t.Fatal(err)
	}
	back, err := loadConfirmed(path)
	if err != nil {
		t.Fatal(err)
	}
	if !back.ConfirmedAt.Equal(confirmedAt) || back.BootID != "boot-1" || !reflect.DeepEqual(normalized(back.Ruleset), normalized(rs)) {
		t.Fatalf("read back %+v:\n%+v\nwant:\n%+v", back, back.Ruleset, rs)
	}
	applied, _ := Describe(conn)

	// The table is there (applied and confirmed): left alone.
	if outcome, _, err := RestoreIfMissing(conn, path); err != nil || outcome != TablePresent {
		t.Fatalf("with the table present: %v, %v", outcome, err)
	}
	// Removed during this boot: the operator meant it.
	if err := Install(conn, nil); err != nil {
		t.Fatal(err)
	}
	if outcome, _, err := RestoreIfMissing(conn, path); err != nil || outcome != RemovedThisBoot {
		t.Fatalf("removed in this boot: %v, %v", outcome, err)
	}
	if d, _ := Describe(conn); !strings.HasPrefix(d, "(no table") {
		t.Fatalf("a table removed on purpose came back:\n%s", d)
	}
	// A reboot: a new boot, no table, the quiet port answers again...
	setBoot("boot-2")
	if err := reachable(p, quietPort); err != nil {
		t.Fatalf("without the table the quiet port should answer: %v", err)
	}
	// ...until the kept ruleset is restored, rule for rule.
	outcome, at, err := RestoreIfMissing(conn, path)
	if err != nil || outcome != Restored || !at.Equal(confirmedAt) {
		t.Fatalf("after the reboot: %v at %s, %v", outcome, at, err)
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
	// The restore recorded this boot: removing the table now is respected.
	if err := Install(conn, nil); err != nil {
		t.Fatal(err)
	}
	if outcome, _, err := RestoreIfMissing(conn, path); err != nil || outcome != RemovedThisBoot {
		t.Fatalf("removed after the restore, same boot: %v, %v", outcome, err)
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

func TestKeptFilesAreChecked(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadConfirmed(filepath.Join(dir, "none.json")); !errors.Is(err, os.ErrNotExist) {
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
		if _, err := loadConfirmed(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}
