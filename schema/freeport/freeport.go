// Package freeport picks free loopback TCP ports for the servers
// flowwarden starts itself (the embedded ClickHouse) and for tests (a real
// Alertmanager, serve's page). It imports nothing of flowwarden's, so any
// package may use it without depending on the storage layer.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Loopback picks k distinct loopback ports that are free now. It picks
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range) when
// it can: a port from that range, free at the pick, can be taken a moment
// later as the source port of any outgoing connection on the machine,
// which is how a test's server once failed to bind. Ports stay held until
// all k are picked, so none repeats.
func Loopback(k int) ([]int, error) {
	lo, hi := quietRange()
	out := make([]int, 0, k)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(out) < k; tries++ {
		addr := "127.0.0.1:0"
		if hi > lo && tries < 50*k {
			addr = "127.0.0.1:" + strconv.Itoa(lo+rand.IntN(hi-lo))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				return nil, fmt.Errorf("pick a free port: %w", err)
			}
			continue
		}
		held = append(held, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// quietRange is the span of ports below the ephemeral range, above the
// well-known and common service ports; empty if it cannot be read.
func quietRange() (lo, hi int) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first <= 20000 {
		return 0, 0
	}
	return 20000, first
}
