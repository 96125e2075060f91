package analyze

import (
	"strings"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// qtypeTunnel is a slow tunnel whose names carry between half and all of
// MinBytes in the window: below the name-information threshold on their
// own. qtypes gives each query's record types in turn.
func qtypeTunnel(qtypes ...string) []schema.Flow {
	g := newBreachGen(31)
	g.dnsTunnel(g.catalog, "d.metrics-cdn.org", 0, 20, 50*time.Second, 24, false)
	n := 0
	for i := range g.out {
		if f := &g.out[i]; f.L7Type == "dns" {
			f.DNSQType = qtypes[n/2%len(qtypes)] // a query and its answer share the type
			n++
		}
	}
	return g.out
}

// The window's information of the A-only tunnel, as the detector counts it.
func qtypeTunnelInfo(t *testing.T) float64 {
	cfg := DefaultConfig()
	d := newDNSTunnel(cfg.DNSTunnel, &cfg, nil, NewMetrics(nil))
	best := 0.0
	for _, f := range qtypeTunnel("A") {
		d.Observe(&f)
		for _, w := range d.ws {
			for _, dom := range w.doms {
				info, _, _, _ := dom.sum()
				best = max(best, info)
			}
		}
	}
	return best
}

func TestDNSTunnelTXTRaisesScore(t *testing.T) {
	cfg := DefaultConfig()
	info := qtypeTunnelInfo(t)
	if min := cfg.DNSTunnel.MinBytes; info >= min || info < min/2 {
		t.Fatalf("the tunnel carries %.0f bytes in a window, want between %.0f and %.0f (below the threshold)", info, min/2, min)
	}
	t.Logf("the tunnel carries %.0f bytes of names per window (threshold %.0f)", info, cfg.DNSTunnel.MinBytes)
	found := runScenario(t, cfg, qtypeTunnel("TXT"))
	if len(found) != 1 || found[0].Detector != DetectorDNSTunnel || found[0].Peer != "metrics-cdn.org" {
		t.Fatalf("TXT tunnel of %.0f bytes per window: findings %+v, want one dns-tunnel to metrics-cdn.org", info, found)
	}
	f := found[0]
	if !strings.Contains(f.Summary, "100% of them TXT/NULL/ANY") || !strings.Contains(f.Evidence.Metric, "TXT/NULL/ANY") {
		t.Errorf("the record types are not in the evidence: %q, metric %q", f.Summary, f.Evidence.Metric)
	}
	if f.Evidence.Observed < f.Evidence.Threshold {
		t.Errorf("observed %.3f below threshold %.3f in a finding", f.Evidence.Observed, f.Evidence.Threshold)
	}
	if f.Evidence.Bytes >= uint64(cfg.DNSTunnel.MinBytes) {
		t.Errorf("evidence bytes %d are the weighted score, want the names' own information", f.Evidence.Bytes)
	}
	// Types joined in one flow (Hubble lists several) count too; so does a mix.
	if found := runScenario(t, cfg, qtypeTunnel("A,NULL")); len(found) != 1 {
		t.Errorf("A,NULL tunnel: %d findings, want 1", len(found))
	}
	if found := runScenario(t, cfg, qtypeTunnel("TXT", "ANY", "A")); len(found) != 1 {
		t.Errorf("TXT/ANY-heavy mix: %d findings, want 1", len(found))
	}
}

func TestDNSTunnelAddressQueriesStayQuiet(t *testing.T) {
	cfg := DefaultConfig()
	for _, mix := range [][]string{{"A"}, {"A", "AAAA"}, {""}, {"A", "AAAA", "AAAA", "TXT"}} {
		if found := runScenario(t, cfg, qtypeTunnel(mix...)); len(found) != 0 {
			t.Errorf("record types %q at %.0f bytes per window: %d findings, want none", mix, qtypeTunnelInfo(t), len(found))
		}
	}
}

func TestTunnelQType(t *testing.T) {
	for qt, want := range map[string]bool{"": false, "A": false, "AAAA": false, "TXT": true, "NULL": true, "ANY": true,
		"A,TXT": true, "txt": true, "MX": false, "A,AAAA": false, "CNAME,ANY": true} {
		if got := tunnelQType(qt); got != want {
			t.Errorf("tunnelQType(%q) = %v, want %v", qt, got, want)
		}
	}
}
