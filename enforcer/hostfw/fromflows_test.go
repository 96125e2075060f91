package hostfw

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

func flowsOf(flows []schema.Flow, err error) func(func(*schema.Flow)) error {
	return func(fn func(*schema.Flow)) error {
		for i := range flows {
			fn(&flows[i])
		}
		return err
	}
}

// TestFromFlows: only conntrack flows make rules (a Hubble flow to the
// same port does not); a window without conntrack flows, or with none
// inbound to the node, is refused saying which; a read error is returned.
func TestFromFlows(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	cfg := DefaultConfig()
	cfg.Node = "node-a"
	cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32")}
	ssh := ctFlow("node-a", "192.168.1.50", "192.168.1.10", "TCP", 22, t0)
	web := ctFlow("node-a", "192.168.1.51", "192.168.1.10", "TCP", 443, t0)
	web.Source = schema.SourceHubble

	rs, err := FromFlows(cfg, flowsOf([]schema.Flow{ssh, web}, nil))
	if err != nil {
		t.Fatal(err)
	}
	rules := strings.Join(observedRules(rs), "\n")
	if rs.Observed != 1 || !strings.Contains(rules, "dport 22") || strings.Contains(rules, "443") {
		t.Errorf("observed %d; rules:\n%s\nwant only ssh from the conntrack flow", rs.Observed, rules)
	}

	if _, err := FromFlows(cfg, flowsOf([]schema.Flow{web}, nil)); err == nil || !strings.Contains(err.Error(), "no conntrack flows") {
		t.Errorf("no conntrack flows: %v", err)
	}
	other := ctFlow("node-b", "192.168.1.50", "192.168.1.11", "TCP", 22, t0)
	if _, err := FromFlows(cfg, flowsOf([]schema.Flow{other}, nil)); err == nil || !strings.Contains(err.Error(), "none of 1 conntrack flows was inbound to node \"node-a\"") {
		t.Errorf("no inbound flow: %v", err)
	}
	cfg.Addresses = nil
	if _, err := FromFlows(cfg, flowsOf([]schema.Flow{other}, nil)); err == nil || !strings.Contains(err.Error(), "recorded as inbound") {
		t.Errorf("no flow recorded as inbound: %v", err)
	}
	read := errors.New("read flows: connection reset")
	if _, err := FromFlows(cfg, flowsOf([]schema.Flow{ssh}, read)); !errors.Is(err, read) {
		t.Errorf("read error: %v", err)
	}
	cfg.CNIInterfaces = []string{"*"}
	if _, err := FromFlows(cfg, flowsOf(nil, nil)); err == nil || !strings.Contains(err.Error(), "bad interface name") {
		t.Errorf("bad configuration: %v", err)
	}
}
