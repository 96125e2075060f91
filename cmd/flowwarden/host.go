package main

import (
	"fmt"
	"os"
	"time"

	nftlib "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// hostSources are the node-level settings shared by serve's conntrack and
// nftables sources and the host firewall commands: which node, and which
// network namespace the netlink sockets open in.
type hostSources struct {
	node        string
	netns       string
	ctInterval  time.Duration
	ctReport    time.Duration
	nftInterval time.Duration

	nsFD   int    // open while in use; 0: the process's own namespace
	nsPath string // the namespace's path, when one was given
}

func (h *hostSources) flags(f *pflag.FlagSet) {
	hostname, _ := os.Hostname()
	f.StringVar(&h.node, "node", hostname, "node name recorded with conntrack flows and counters (in a DaemonSet: the downward API's spec.nodeName)")
	f.StringVar(&h.netns, "netns", "", "open the conntrack and nftables netlink sockets in this network namespace (/var/run/netns/NAME or a path)")
	f.DurationVar(&h.ctInterval, "conntrack-interval", 10*time.Second, "how often the conntrack table is dumped")
	f.DurationVar(&h.ctReport, "conntrack-report", time.Minute, "how often connections that stay open are reported (ended ones are reported when they end)")
	f.DurationVar(&h.nftInterval, "nftables-interval", 15*time.Second, "how often the nftables counters are read")
}

// open opens the namespace, if one was given.
func (h *hostSources) open() error {
	if h.netns == "" {
		return nil
	}
	path := h.netns
	if path[0] != '/' {
		path = "/var/run/netns/" + path
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("--netns %s: %w", h.netns, err)
	}
	h.nsFD, h.nsPath = fd, path
	return nil
}

func (h *hostSources) close() {
	if h.nsFD > 0 {
		unix.Close(h.nsFD)
		h.nsFD = 0
	}
}

func (h *hostSources) netlinkConfig() *netlink.Config {
	if h.nsFD > 0 {
		return &netlink.Config{NetNS: h.nsFD}
	}
	return nil
}

func (h *hostSources) nftOptions() []nftlib.ConnOption {
	if h.nsFD > 0 {
		return []nftlib.ConnOption{nftlib.WithNetNSFd(h.nsFD)}
	}
	return nil
}
