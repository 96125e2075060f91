package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"
)

// InterfaceAddresses lists the non-loopback addresses of the interfaces in
// the network namespace nsFD (0: this process's), read from a thread that
// enters it: the node's own addresses, for Poller.LocalAddresses.
func InterfaceAddresses(nsFD int) ([]netip.Addr, error) {
	type result struct {
		addrs []net.Addr
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if nsFD > 0 {
			if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("enter the network namespace: %w", err)}
				return // the thread stays locked and ends with the goroutine
			}
		}
		addrs, err := net.InterfaceAddrs()
		ch <- result{addrs, err}
		if nsFD <= 0 {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked and is retired, namespace and all.
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("interface addresses: %w", r.err)
	}
	var out []netip.Addr
	for _, a := range r.addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		ip = ip.Unmap()
		if ip.IsValid() && !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	return out, nil
}
