package hostfw

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// The rollback must not depend on the process the operator runs: if that
// process is killed (SIGKILL, the OOM killer) while it waits for the
// confirmation, a ruleset that locks the operator out would stay. So the
// change is made by a guard: the same executable, started in a session of
// its own, which takes the snapshot, installs the ruleset and restores the
// snapshot unless the applying process sends "yes" in time. When that
// process goes away, its end of the pipe closes and the guard rolls back at
// once.

const envGuard = "FLOWWARDEN_HOSTFW_GUARD"

// guardRequest is the first line the applying process writes to the guard.
type guardRequest struct {
	NetNS   string // network namespace path; empty: the guard's own
	Timeout time.Duration
	Ruleset *Ruleset
}

// RunGuardIfRequested turns the process into the guard when ApplyGuarded
// started it as one, or into DryRun's user-namespace child, and never
// returns in those cases. Call it first thing in main (and in TestMain of
// tests that apply or dry-run).
func RunGuardIfRequested() {
	if os.Getenv(envDryRun) == "1" {
		runDryRunChild()
	}
	if os.Getenv(envGuard) != "1" {
		return
	}
	status := os.NewFile(3, "status")
	// The guard belongs to no terminal; stray signals must not stop it
	// between the install and the rollback.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	if err := guard(os.Stdin, status); err != nil {
		fmt.Fprintln(status, "error: "+strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	os.Exit(0)
}

// guard reads the request, applies with rollback, and reports on status:
// "applied", then "confirmed" or "rolled back: <why>".
func guard(in io.Reader, status io.Writer) error {
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	var req guardRequest
	if err := json.Unmarshal(line, &req); err != nil || req.Ruleset == nil {
		return fmt.Errorf("bad request: %v", err)
	}
	var opts []nftables.ConnOption
	if req.NetNS != "" {
		fd, err := unix.Open(req.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("network namespace %s: %w", req.NetNS, err)
		}
		defer unix.Close(fd)
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	confirm := func(ctx context.Context) error {
		fmt.Fprintln(status, "applied")
		answer := make(chan error, 1)
		go func() { // ends when the applying process writes or goes away
			l, err := br.ReadString('\n')
			switch {
			case err != nil:
				answer <- errors.New("the applying process went away without confirming")
			case strings.TrimSpace(l) == "yes":
				answer <- nil
			default:
				answer <- errors.New("not confirmed")
			}
		}()
		select {
		case err := <-answer:
			return err
		case <-ctx.Done():
			return fmt.Errorf("no confirmation within %s", req.Timeout)
		}
	}
	// The applying process did the dry run.
	err = applyChecked(ctx, conn, req.Ruleset, req.Timeout, confirm, slog.New(slog.DiscardHandler))
	switch {
	case err == nil:
		fmt.Fprintln(status, "confirmed")
		return nil
	case errors.Is(err, ErrNotConfirmed):
		fmt.Fprintln(status, "rolled back: "+strings.TrimPrefix(err.Error(), ErrNotConfirmed.Error()+" "))
		return nil
	}
	return err
}

// ApplyGuarded applies rs through a guard process (see above) in the
// network namespace at netnsPath ("" for the host's): dry run, snapshot,
// atomic replacement, then confirm has timeout to return nil. The guard
// rolls back when confirm fails, when the timeout passes, and when this
// process dies. The error wraps ErrNotConfirmed after a rollback.
func ApplyGuarded(ctx context.Context, netnsPath string, rs *Ruleset, timeout time.Duration, confirm func(context.Context) error, log *slog.Logger) error {
	n, err := DryRun(rs)
	if err != nil {
		return err
	}
	log.Info("dry run passed: the kernel accepted the ruleset in a scratch namespace", "rules", n)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable for the guard: %w", err)
	}
	req, err := json.Marshal(guardRequest{NetNS: netnsPath, Timeout: timeout + 5*time.Second, Ruleset: rs})
	if err != nil {
		return err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envGuard+"=1")
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no terminal, no SIGHUP
	toGuard, err := cmd.StdinPipe()
	if err != nil {
		statusW.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		statusW.Close()
		return fmt.Errorf("start the guard: %w", err)
	}
	statusW.Close()
	defer func() { _ = cmd.Wait() }()
	defer toGuard.Close()
	status := bufio.NewScanner(statusR)
	next := func() string {
		if status.Scan() {
			return status.Text()
		}
		return ""
	}
	if _, err := toGuard.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("talk to the guard: %w", err)
	}
	switch s := next(); {
	case s == "applied":
	case strings.HasPrefix(s, "error: "):
		return errors.New(strings.TrimPrefix(s, "error: "))
	default:
		return fmt.Errorf("the guard ended before applying (%q)", s)
	}
	log.Info("host firewall applied; waiting for confirmation", "table", "inet "+TableName, "timeout", timeout, "guard", cmd.Process.Pid)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cerr := confirm(cctx)
	if cerr == nil {
		_, _ = io.WriteString(toGuard, "yes\n")
	} else {
		toGuard.Close() // the guard rolls back now
	}
	switch s := next(); {
	case s == "confirmed":
		log.Info("host firewall confirmed")
		return nil
	case strings.HasPrefix(s, "rolled back: "):
		why := strings.TrimPrefix(s, "rolled back: ")
		if cerr != nil {
			why = cerr.Error()
		}
		log.Warn("host firewall rolled back", "reason", why)
		return fmt.Errorf("%w (%s)", ErrNotConfirmed, why)
	case strings.HasPrefix(s, "error: "):
		return errors.New(strings.TrimPrefix(s, "error: "))
	default:
		return fmt.Errorf("the guard ended without a result: check table inet %s (nft list table inet %s)", TableName, TableName)
	}
}
