package hostfw

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/google/nftables"
)

// ConfirmedFile is the name, under the data directory, of the last host
// firewall an operator confirmed on this node.
const ConfirmedFile = "host-firewall.json"

// confirmedVersion is the format of ConfirmedFile.
const confirmedVersion = 1

type confirmed struct {
	Version     int       `json:"version"`
	ConfirmedAt time.Time `json:"confirmed_at"`
	// BootID is the kernel's boot ID when the ruleset was last put in place
	// (confirmed or restored): a missing table in that same boot was removed
	// on purpose, not by a reboot.
	BootID  string   `json:"boot_id,omitempty"`
	Ruleset *Ruleset `json:"ruleset"`
}

// bootIDPath names the running kernel's boot ID (a new one at every boot).
var bootIDPath = "/proc/sys/kernel/random/boot_id"

// bootID is the running kernel's boot ID, or "" when it cannot be read.
func bootID() string {
	raw, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// SaveConfirmed keeps rs as the node's confirmed host firewall: written to
// a temporary file, synced and renamed over path, so a crash leaves the
// previous file or the new one, never half of one.
func SaveConfirmed(path string, rs *Ruleset, at time.Time) error {
	raw, err := json.MarshalIndent(confirmed{Version: confirmedVersion, ConfirmedAt: at.UTC(), BootID: bootID(), Ruleset: rs}, "", "  ")
	if err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	// Written whole or not at all (temporary file, fsync, rename).
	if err := renameio.WriteFile(path, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	return nil
}

// loadConfirmed reads what SaveConfirmed kept and checks that every rule
// still encodes; a missing file is os.ErrNotExist.
func loadConfirmed(path string) (*confirmed, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c confirmed
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("confirmed host firewall %s: %w", path, err)
	}
	if c.Version != confirmedVersion || c.Ruleset == nil || len(c.Ruleset.Rules) == 0 {
		return nil, fmt.Errorf("confirmed host firewall %s: not a version %d ruleset", path, confirmedVersion)
	}
	for i, r := range c.Ruleset.Rules {
		if _, err := r.exprs(); err != nil {
			return nil, fmt.Errorf("confirmed host firewall %s: rule %d (%s): %w", path, i+1, r, err)
		}
	}
	return &c, nil
}

// RestoreOutcome says what RestoreIfMissing did.
type RestoreOutcome int

// Outcomes of RestoreIfMissing.
const (
	NothingKept     RestoreOutcome = iota // no confirmed ruleset on this node
	TablePresent                          // table inet flowwarden exists: left alone
	RemovedThisBoot                       // missing, but it was in place earlier in this boot: removed on purpose, left off
	Restored                              // missing since a reboot: put back
)

// RestoreIfMissing installs the confirmed ruleset kept at path when table
// inet flowwarden is absent because the node rebooted since the ruleset
// was put in place. A table that exists (whatever its rules) is left alone,
// and so is one removed during this boot (an operator turning it off), and
// a node with no confirmed ruleset. It also returns when the ruleset was
// confirmed. After a restore the file records this boot.
func RestoreIfMissing(conn *nftables.Conn, path string) (RestoreOutcome, time.Time, error) {
	c, err := loadConfirmed(path)
	if errors.Is(err, os.ErrNotExist) {
		return NothingKept, time.Time{}, nil
	}
	if err != nil {
		return NothingKept, time.Time{}, err
	}
	snap, err := TakeSnapshot(conn)
	if err != nil {
		return NothingKept, c.ConfirmedAt, err
	}
	switch {
	case snap.Exists:
		return TablePresent, c.ConfirmedAt, nil
	case c.BootID != "" && c.BootID == bootID():
		return RemovedThisBoot, c.ConfirmedAt, nil
	}
	if err := Install(conn, c.Ruleset); err != nil {
		return NothingKept, c.ConfirmedAt, err
	}
	if err := SaveConfirmed(path, c.Ruleset, c.ConfirmedAt); err != nil {
		return Restored, c.ConfirmedAt, err
	}
	return Restored, c.ConfirmedAt, nil
}
