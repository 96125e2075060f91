package hostfw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

var (
	ctStateBits = map[string]uint32{"invalid": expr.CtStateBitINVALID, "established": expr.CtStateBitESTABLISHED,
		"related": expr.CtStateBitRELATED, "new": expr.CtStateBitNEW}
	protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP,
		"icmp": unix.IPPROTO_ICMP, "ipv6-icmp": unix.IPPROTO_ICMPV6}
)

// exprs encodes the rule the way nft 1.0 encodes the same text (so `nft
// list` prints both alike): byte-aligned prefixes load only their bytes,
// other prefixes are masked.
func (r Rule) exprs() ([]expr.Any, error) {
	var out []expr.Any
	if len(r.CtStates) > 0 {
		var mask uint32
		for _, s := range r.CtStates {
			bit, ok := ctStateBits[s]
			if !ok {
				return nil, fmt.Errorf("unknown ct state %q", s)
			}
			mask |= bit
		}
		out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	}
	if r.Iif != "" {
		if r.Iif != "lo" {
			return nil, fmt.Errorf("iif %q: only lo is supported (its index is 1 in every namespace); use iifname", r.Iif)
		}
		out = append(out, &expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(1)})
	}
	if r.Iifname != "" {
		var data []byte
		if prefix, wild := strings.CutSuffix(r.Iifname, "*"); wild {
			data = []byte(prefix)
		} else {
			data = make([]byte, unix.IFNAMSIZ)
			copy(data, r.Iifname)
		}
		out = append(out, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data})
	}
	if r.Src.IsValid() {
		if r.Src.Bits() == 0 {
			return nil, errors.New("a source prefix of length 0 would allow everything")
		}
		nfproto, offset := byte(unix.NFPROTO_IPV4), uint32(12)
		if r.Src.Addr().Is6() {
			nfproto, offset = unix.NFPROTO_IPV6, 8
		}
		addr := r.Src.Masked().Addr().AsSlice()
		out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}})
		if bits := r.Src.Bits(); bits%8 == 0 {
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(bits / 8)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:bits/8]})
		} else {
			m := make([]byte, len(addr))
			for i := 0; i < bits; i++ {
				m[i/8] |= 0x80 >> (i % 8)
			}
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: m, Xor: make([]byte, len(addr))},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
		}
	}
	if r.Protocol != "" {
		num, ok := protoNumbers[r.Protocol]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", r.Protocol)
		}
		out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{num}})
		if r.Port != 0 {
			if num != unix.IPPROTO_TCP && num != unix.IPPROTO_UDP && num != unix.IPPROTO_SCTP {
				return nil, fmt.Errorf("%s has no ports", r.Protocol)
			}
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Port)})
		}
	} else if r.Port != 0 {
		return nil, errors.New("a port needs a protocol")
	}
	if r.Counter {
		out = append(out, &expr.Counter{})
	}
	switch r.Verdict {
	case "accept":
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	default:
		return nil, fmt.Errorf("verdict %q: want accept or drop", r.Verdict)
	}
	return out, nil
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// queueReplace queues, in conn's next batch, the deletion of table inet
// flowwarden (if it exists) and, unless rs is nil, its re-creation with rs.
// The kernel applies a batch atomically: no packet sees a half ruleset.
func queueReplace(conn *nftables.Conn, rs *Ruleset) error {
	t := table()
	conn.AddTable(t)
	conn.DelTable(t)
	if rs == nil {
		return nil
	}
	conn.AddTable(t)
	policy := nftables.ChainPolicyDrop
	ch := conn.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for i, r := range rs.Rules {
		exprs, err := r.exprs()
		if err != nil {
			return fmt.Errorf("rule %d (%s): %w", i+1, r, err)
		}
		var ud []byte
		if r.Comment != "" {
			if len(r.Comment) > 127 {
				return fmt.Errorf("rule %d: comment longer than nft's 128 bytes", i+1)
			}
			ud = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: ud})
	}
	return nil
}

// Install replaces table inet flowwarden with rs in one transaction.
func Install(conn *nftables.Conn, rs *Ruleset) error {
	if err := queueReplace(conn, rs); err != nil {
		return err
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: install table inet %s: %w", TableName, err)
	}
	return nil
}

// DryRun loads rs into a throwaway network namespace, so the kernel checks
// every rule without touching the host, and returns how many rules it
// accepted. The namespace is made here when the process may (CAP_SYS_ADMIN);
// otherwise, as in the node DaemonSet's pod with only CAP_NET_ADMIN, a child
// of this executable does the load in new user and network namespaces,
// which need no privilege where the kernel allows user namespaces.
func DryRun(rs *Ruleset) (int, error) {
	fd, err := newScratchNetNS()
	if errors.Is(err, unix.EPERM) {
		n, uerr := dryRunInUserNS(rs)
		if uerr != nil {
			return n, fmt.Errorf("dry run: no network namespace of our own (%v), nor in a user namespace: %w", err, uerr)
		}
		return n, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dry run: %w", err)
	}
	defer unix.Close(fd)
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return 0, fmt.Errorf("dry run: %w", err)
	}
	return loadAndCount(conn, rs)
}

// newScratchNetNS is scratchNetNS; tests replace it to take the path an
// unprivileged process takes.
var newScratchNetNS = scratchNetNS

// loadAndCount installs rs through conn (a scratch namespace's) and reads
// the rules back.
func loadAndCount(conn *nftables.Conn, rs *Ruleset) (int, error) {
	if err := Install(conn, rs); err != nil {
		return 0, fmt.Errorf("dry run: the kernel rejected the ruleset: %w", err)
	}
	rules, err := conn.GetRules(table(), &nftables.Chain{Name: "input", Table: table()})
	if err != nil {
		return 0, fmt.Errorf("dry run: read back: %w", err)
	}
	if len(rules) != len(rs.Rules) {
		return len(rules), fmt.Errorf("dry run: %d rules loaded, %d read back", len(rs.Rules), len(rules))
	}
	return len(rules), nil
}

// scratchNetNS returns a file descriptor of a new, empty network namespace
// that disappears when the descriptor is closed. The namespace is made on a
// locked thread that returns to its own namespace before it is released.
func scratchNetNS() (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("new network namespace (needs CAP_SYS_ADMIN): %w", err)}
			return
		}
		fd, ferr := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with this goroutine.
			if ferr == nil {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("return to the original namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, ferr}
	}()
	r := <-ch
	return r.fd, r.err
}

// Snapshot is table inet flowwarden as it was before a change: absent, or
// its chains, rules (with their counters) and named counters.
type Snapshot struct {
	Exists   bool
	Chains   []*nftables.Chain
	Rules    map[string][]*nftables.Rule
	Counters []*nftables.CounterObj
}

// TakeSnapshot reads table inet flowwarden. Sets and other stateful objects
// are refused: restoring them is not supported, so nothing would be applied.
func TakeSnapshot(conn *nftables.Conn) (*Snapshot, error) {
	t, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return &Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot of table inet %s: %w", TableName, err)
	}
	s := &Snapshot{Exists: true, Rules: map[string][]*nftables.Rule{}}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("snapshot: chains: %w", err)
	}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		s.Chains = append(s.Chains, c)
		rules, err := conn.GetRules(t, c)
		if err != nil {
			return nil, fmt.Errorf("snapshot: rules of chain %s: %w", c.Name, err)
		}
		s.Rules[c.Name] = rules
	}
	sets, err := conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("snapshot: sets: %w", err)
	}
	if len(sets) > 0 {
		return nil, fmt.Errorf("table inet %s holds %d sets, which rollback cannot restore; remove the table by hand (nft delete table inet %s) first", TableName, len(sets), TableName)
	}
	objs, err := conn.GetObjects(t)
	if err != nil {
		return nil, fmt.Errorf("snapshot: objects: %w", err)
	}
	for _, o := range objs {
		c, ok := o.(*nftables.CounterObj)
		if !ok {
			return nil, fmt.Errorf("table inet %s holds a %T object, which rollback cannot restore", TableName, o)
		}
		s.Counters = append(s.Counters, c)
	}
	return s, nil
}

// Restore puts the table back as the snapshot found it, in one transaction.
func (s *Snapshot) Restore(conn *nftables.Conn) error {
	if err := queueReplace(conn, nil); err != nil {
		return err
	}
	if s.Exists {
		t := conn.AddTable(table())
		chains := map[string]*nftables.Chain{}
		for _, c := range s.Chains {
			cc := *c
			cc.Table = t
			chains[c.Name] = conn.AddChain(&cc)
		}
		for _, c := range s.Counters {
			cc := *c
			cc.Table = t
			conn.AddObj(&cc)
		}
		// Regular chains first (rules may jump to them), then their rules.
		for _, c := range s.Chains {
			for _, r := range s.Rules[c.Name] {
				conn.AddRule(&nftables.Rule{Table: t, Chain: chains[c.Name], Exprs: r.Exprs, UserData: r.UserData})
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: restore table inet %s: %w", TableName, err)
	}
	return nil
}

// ErrNotConfirmed is wrapped by Apply's error when the change was rolled back.
var ErrNotConfirmed = errors.New("not confirmed: the previous ruleset was restored")

// Apply loads rs the careful way: a dry run in a scratch namespace, a
// snapshot of the current table, the atomic replacement, then confirm. If
// confirm does not return nil within timeout (or ctx ends), the snapshot is
// restored and the error wraps ErrNotConfirmed.
func Apply(ctx context.Context, conn *nftables.Conn, rs *Ruleset, timeout time.Duration, confirm func(context.Context) error, log *slog.Logger) error {
	n, err := DryRun(rs)
	if err != nil {
		return err
	}
	log.Info("dry run passed: the kernel accepted the ruleset in a scratch namespace", "rules", n)
	return applyChecked(ctx, conn, rs, timeout, confirm, log)
}

// applyChecked is Apply after the dry run.
func applyChecked(ctx context.Context, conn *nftables.Conn, rs *Ruleset, timeout time.Duration, confirm func(context.Context) error, log *slog.Logger) error {
	prev, err := TakeSnapshot(conn)
	if err != nil {
		return err
	}
	if err := Install(conn, rs); err != nil {
		return err
	}
	log.Info("host firewall applied; waiting for confirmation", "table", "inet "+TableName, "timeout", timeout)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cerr := confirm(cctx)
	if cerr == nil {
		log.Info("host firewall confirmed")
		return nil
	}
	if err := prev.Restore(conn); err != nil {
		return fmt.Errorf("%v, and the rollback FAILED: %w (table inet %s may need `nft delete table inet %s`)", cerr, err, TableName, TableName)
	}
	log.Warn("host firewall rolled back", "reason", cerr)
	return fmt.Errorf("%w (%v)", ErrNotConfirmed, cerr)
}

// Describe prints table inet flowwarden's chains and rules as netlink
// expressions without handles, for comparing rulesets.
func Describe(conn *nftables.Conn) (string, error) {
	s, err := TakeSnapshot(conn)
	if err != nil {
		return "", err
	}
	if !s.Exists {
		return "(no table inet " + TableName + ")\n", nil
	}
	var b strings.Builder
	for _, c := range s.Chains {
		fmt.Fprintf(&b, "chain %s type=%s", c.Name, c.Type)
		if c.Hooknum != nil {
			fmt.Fprintf(&b, " hook=%d prio=%d", *c.Hooknum, *c.Priority)
		}
		if c.Policy != nil {
			fmt.Fprintf(&b, " policy=%d", *c.Policy)
		}
		b.WriteString("\n")
		for _, r := range s.Rules[c.Name] {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			fmt.Fprintf(&b, "  rule %q:", comment)
			for _, e := range r.Exprs {
				if _, ok := e.(*expr.Counter); ok {
					b.WriteString(" counter") // values differ between readings
					continue
				}
				fmt.Fprintf(&b, " %T%+v", e, e)
			}
			b.WriteString("\n")
		}
	}
	for _, c := range s.Counters {
		fmt.Fprintf(&b, "counter %s\n", c.Name)
	}
	return b.String(), nil
}
