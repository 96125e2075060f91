package hostfw

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

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
	Ruleset     *Ruleset  `json:"ruleset"`
}

// SaveConfirmed keeps rs as the node's confirmed host firewall: written to
// a temporary file, synced and renamed over path, so a crash leaves the
// previous file or the new one, never half of one.
func SaveConfirmed(path string, rs *Ruleset, at time.Time) error {
	raw, err := json.MarshalIndent(confirmed{Version: confirmedVersion, ConfirmedAt: at.UTC(), Ruleset: rs}, "", "  ")
	if err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".host-firewall-*")
	if err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keep the confirmed host firewall: %w", err)
	}
	return nil
}

// LoadConfirmed reads a ruleset kept by SaveConfirmed and checks that every
// rule still encodes; a missing file is os.ErrNotExist.
func LoadConfirmed(path string) (*Ruleset, time.Time, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	var c confirmed
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, time.Time{}, fmt.Errorf("confirmed host firewall %s: %w", path, err)
	}
	if c.Version != confirmedVersion || c.Ruleset == nil || len(c.Ruleset.Rules) == 0 {
		return nil, time.Time{}, fmt.Errorf("confirmed host firewall %s: not a version %d ruleset", path, confirmedVersion)
	}
	for i, r := range c.Ruleset.Rules {
		if _, err := r.exprs(); err != nil {
			return nil, time.Time{}, fmt.Errorf("confirmed host firewall %s: rule %d (%s): %w", path, i+1, r, err)
		}
	}
	return c.Ruleset, c.ConfirmedAt, nil
}

// RestoreIfMissing installs the confirmed ruleset kept at path when table
// inet flowwarden is absent, as it is after a reboot; a table that exists
// (whatever its rules) is left alone, and so is a node with no confirmed
// ruleset. It reports whether it installed one, and when that ruleset was
// confirmed.
func RestoreIfMissing(conn *nftables.Conn, path string) (bool, time.Time, error) {
	rs, at, err := LoadConfirmed(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	snap, err := TakeSnapshot(conn)
	if err != nil {
		return false, time.Time{}, err
	}
	if snap.Exists {
		return false, at, nil
	}
	if err := Install(conn, rs); err != nil {
		return false, at, err
	}
	return true, at, nil
}
