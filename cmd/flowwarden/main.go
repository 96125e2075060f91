// Command flowwarden turns a cluster's network flows into security: it
// stores every flow in ClickHouse for forensics, detects attacks on the live
// stream, and writes least-privilege network policies. This package only
// wires the other packages together.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/flowwarden/flowwarden/enforcer/hostfw"
	"github.com/flowwarden/flowwarden/schema/clickhouse/embedded"
)

func main() {
	// The embedded ClickHouse runs as a child process of this same binary.
	embedded.RunChildIfRequested()
	// So does the guard that rolls back an unconfirmed host firewall.
	hostfw.RunGuardIfRequested()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := execute(ctx, newRootCommand(), os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode lets a command choose its exit status without printing an error.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
