// Package nftables reads nftables counters over netlink: named counter
// objects and the anonymous counters of rules (with their table, chain,
// handle and comment), for the nft_counters table and drop-rule rates.
package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/flowwarden/flowwarden/schema"
)

var families = map[nftables.TableFamily]string{
	nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyNetdev: "netdev", nftables.TableFamilyBridge: "bridge",
}

// Read takes one reading of every counter in every table (on node).
// Names and comments are kept as text: invalid UTF-8 and control
// characters in them (a comment set through raw netlink) become U+FFFD.
func Read(conn *nftables.Conn, node string, now time.Time) ([]schema.CounterSample, error) {
	tables, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var out []schema.CounterSample
	for _, t := range tables {
		fam := families[t.Family]
		objs, err := conn.GetObjects(t)
		if err != nil {
			return nil, fmt.Errorf("nftables: objects of %s %s: %w", fam, t.Name, err)
		}
		for _, o := range objs {
			if c, ok := o.(*nftables.CounterObj); ok {
				out = append(out, schema.CounterSample{Time: now, Node: node, Family: fam, Table: schema.CleanName(t.Name), Name: schema.CleanName(c.Name), Packets: c.Packets, Bytes: c.Bytes})
			}
		}
		for _, ch := range chains {
			if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			rules, err := conn.GetRules(t, ch)
			if err != nil {
				return nil, fmt.Errorf("nftables: rules of %s %s %s: %w", fam, t.Name, ch.Name, err)
			}
			for _, r := range rules {
				comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				drop := false
				for _, e := range r.Exprs {
					if v, ok := e.(*expr.Verdict); ok && v.Kind == expr.VerdictDrop {
						drop = true
					}
				}
				for _, e := range r.Exprs {
					if c, ok := e.(*expr.Counter); ok {
						out = append(out, schema.CounterSample{Time: now, Node: node, Family: fam, Table: schema.CleanName(t.Name), Chain: schema.CleanName(ch.Name), Handle: r.Handle,
							Comment: schema.CleanName(comment), Packets: c.Packets, Bytes: c.Bytes, Drop: drop})
					}
				}
			}
		}
	}
	return out, nil
}

// Poller reads the counters every Interval and hands the samples over.
type Poller struct {
	Conn     *nftables.Conn
	Node     string
	Interval time.Duration
	Store    func(ctx context.Context, samples []schema.CounterSample) error
	Log      *slog.Logger
}

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	if p.Interval <= 0 {
		p.Interval = 15 * time.Second
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		samples, err := Read(p.Conn, p.Node, time.Now())
		if err == nil {
			err = p.Store(ctx, samples)
		}
		if err != nil && p.Log != nil {
			p.Log.Warn("nftables counters", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
