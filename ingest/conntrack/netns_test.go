package conntrack

import (
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/flowwarden/flowwarden/ingest/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// TestDumpSeesRealConnections makes TCP connections inside a fresh network
// namespace (with a conntrack-using rule so tracking is on there) and finds
// them in the conntrack dump with the right tuples.
func TestDumpSeesRealConnections(t *testing.T) {
	ns := netnstest.New(t)
	nft, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	table := nft.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "fwtest"})
	policy := nftables.ChainPolicyAccept
	chain := nft.AddChain(&nftables.Chain{Name: "output", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	nft.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Counter{},
	}})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	ns.Traffic(t, 18090, 3, 2048, 0)
	conn, err := ct.Dial(&netlink.Config{NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	flows, err := Dump(conn, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Protocol == "TCP" && f.DstPort == 18090 {
			n++
			if f.SrcIP.String() != "127.0.0.1" || f.DstIP.String() != "127.0.0.1" || f.SrcPort == 0 || f.Source != "conntrack" || f.Node != "node-1" {
				t.Errorf("wrong tuple: %+v", f)
			}
		}
	}
	if n != 3 {
		t.Fatalf("%d conntrack entries to port 18090, want 3 (of %d entries)", n, len(flows))
	}
}
