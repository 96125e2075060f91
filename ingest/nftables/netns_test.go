package nftables

import (
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/flowwarden/flowwarden/ingest/netnstest"
	"github.com/flowwarden/flowwarden/schema"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// InstallTestRules puts a small ruleset into the namespace: conntrack on,
// a named counter for the served port, and a counted drop for another.
func installTestRules(t *testing.T, conn *nftables.Conn, served, blocked uint16) {
	t.Helper()
	table := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "fwtest"})
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	conn.AddObj(&nftables.CounterObj{Table: table, Name: "served_in"})
	tcpPort := func(p uint16) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
		}
	}
	// ct state established,related counter accept (this also turns conntrack on)
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, UserData: userdata.AppendString(nil, userdata.TypeComment, "established"), Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, UserData: userdata.AppendString(nil, userdata.TypeComment, "served"),
		Exprs: append(tcpPort(served), &expr.Objref{Type: 1, Name: "served_in"}, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})})
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, UserData: userdata.AppendString(nil, userdata.TypeComment, "blocked"),
		Exprs: append(tcpPort(blocked), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := conn.Flush(); err != nil {
		t.Fatalf("install rules: %v", err)
	}
}

// TestCountersMoveWithRealTraffic runs TCP traffic inside a fresh network
// namespace and reads the named and rule counters it moved.
func TestCountersMoveWithRealTraffic(t *testing.T) {
	ns := netnstest.New(t)
	conn, err := nftables.New(nftables.WithNetNSFd(ns.FD))
	if err != nil {
		t.Fatal(err)
	}
	installTestRules(t, conn, 18080, 18081)
	before, err := Read(conn, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ns.Traffic(t, 18080, 5, 4096, 18081)
	after, err := Read(conn, "node-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	get := func(samples []schema.CounterSample, name, comment string) schema.CounterSample {
		for _, s := range samples {
			if s.Table == "fwtest" && (name != "" && s.Name == name || comment != "" && s.Comment == comment) {
				return s
			}
		}
		t.Fatalf("no counter %q/%q in %+v", name, comment, samples)
		return schema.CounterSample{}
	}
	if b, a := get(before, "served_in", ""), get(after, "served_in", ""); a.Packets < b.Packets+5 || a.Bytes <= b.Bytes {
		t.Errorf("named counter did not move with 5 connections: before %+v after %+v", b, a)
	}
	if a := get(after, "", "served"); a.Packets < 5 || a.Handle == 0 || a.Chain != "input" || a.Family != "inet" {
		t.Errorf("rule counter %+v", a)
	}
	if a := get(after, "", "established"); a.Packets == 0 {
		t.Errorf("established counter did not move: %+v", a)
	}
	if a := get(after, "", "blocked"); a.Packets == 0 || !a.Drop {
		t.Errorf("the drop rule's counter should count the refused SYNs: %+v", a)
	}
}
