package hostfw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
)

const envDryRun = "FLOWWARDEN_HOSTFW_DRYRUN"

// dryRunTimeout bounds the child: loading a few hundred rules takes
// milliseconds.
const dryRunTimeout = 30 * time.Second

// dryRunResult is what the dry-run child prints.
type dryRunResult struct {
	Rules int    `json:"rules"`
	Error string `json:"error,omitempty"`
}

// dryRunInUserNS runs this executable as a child born in new user and
// network namespaces (root of the first, owner of the second: its nftables
// are its own) that loads rs and reports how many rules the kernel took.
func dryRunInUserNS(rs *Ruleset) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	req, err := json.Marshal(rs)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), dryRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), envDryRun+"=1")
	cmd.Stdin = bytes.NewReader(req)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return 0, fmt.Errorf("user namespace child: no answer within %s", dryRunTimeout)
	}
	var res dryRunResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		if runErr != nil {
			return 0, fmt.Errorf("user namespace child: %w %s", runErr, strings.TrimSpace(errOut.String()))
		}
		return 0, fmt.Errorf("user namespace child: unreadable answer %q", out.String())
	}
	if res.Error != "" {
		return res.Rules, errors.New(res.Error)
	}
	return res.Rules, nil
}

// runDryRunChild is the child's side: read the ruleset, load it into the
// child's own network namespace, print the result, exit.
func runDryRunChild() {
	var res dryRunResult
	var rs Ruleset
	if err := json.NewDecoder(os.Stdin).Decode(&rs); err != nil {
		res.Error = "read the ruleset: " + err.Error()
	} else if conn, err := nftables.New(); err != nil {
		res.Error = "nftables: " + err.Error()
	} else {
		res.Rules, err = loadAndCount(conn, &rs)
		if err != nil {
			res.Error = err.Error()
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Error != "" {
		os.Exit(1)
	}
	os.Exit(0)
}
