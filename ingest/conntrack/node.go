package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// inNetNS runs fn on a thread inside the network namespace nsFD (0: this
// process's own, on the calling thread's namespace).
func inNetNS(nsFD int, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if nsFD > 0 {
			if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("enter the network namespace: %w", err)
				return // the thread stays locked and ends with the goroutine
			}
		}
		fn()
		errc <- nil
		if nsFD <= 0 {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked and is retired, namespace and all.
	}()
	return <-errc
}

// InterfaceAddresses lists the non-loopback addresses of the interfaces in
// the network namespace nsFD (0: this process's): the node's own
// addresses, for Poller.LocalAddresses.
func InterfaceAddresses(nsFD int) ([]netip.Addr, error) {
	var addrs []net.Addr
	var err error
	if nerr := inNetNS(nsFD, func() { addrs, err = net.InterfaceAddrs() }); nerr != nil {
		err = nerr
	}
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
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

// AccountingSysctl is the setting that makes conntrack count each
// connection's bytes and packets (per network namespace).
const AccountingSysctl = "net.netfilter.nf_conntrack_acct"

// Accounting reports whether conntrack counts bytes and packets in the
// network namespace nsFD (0: this process's). Without it, flows from
// conntrack carry no bytes or packets.
func Accounting(nsFD int) (bool, error) {
	var raw []byte
	var err error
	// /proc/sys/net shows the namespace of the thread that opens it.
	path := "/proc/sys/" + strings.ReplaceAll(AccountingSysctl, ".", "/")
	if nerr := inNetNS(nsFD, func() { raw, err = os.ReadFile(path) }); nerr != nil {
		err = nerr
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", AccountingSysctl, err)
	}
	switch v := strings.TrimSpace(string(raw)); v {
	case "0":
		return false, nil
	case "1":
		return true, nil
	default:
		return false, fmt.Errorf("%s is %q, want 0 or 1", AccountingSysctl, v)
	}
}
