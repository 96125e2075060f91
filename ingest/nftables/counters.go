// Package nftables reads nftables counters over netlink: named counter
// objects and the anonymous counters of rules (with their table, chain,
// handle and comment), for the nft_counters table and drop-rule rates.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/flowwarden/flowwarden/ingest"
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

// Config configures a Poller.
type Config struct {
	// Node is recorded with every sample.
	Node string
	// Interval is how often the counters are read (default 15s).
	Interval time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Interval: 15 * time.Second} }

// Poller reads the counters every Interval and hands the samples to its
// sink (the store of nft_counters, the drop-rate detector).
type Poller struct {
	cfg  Config
	conn *nftables.Conn
	sink ingest.CounterSink
	log  *slog.Logger
}

// New returns a poller that reads conn's counters into sink. It does no
// I/O until Run.
func New(cfg Config, conn *nftables.Conn, sink ingest.CounterSink, log *slog.Logger) (*Poller, error) {
	if conn == nil {
		return nil, errors.New("nftables: no netlink connection")
	}
	if sink == nil {
		return nil, errors.New("nftables: no counter sink")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultConfig().Interval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{cfg: cfg, conn: conn, sink: sink, log: log}, nil
}

// Run polls until ctx ends. A reading or a sink that fails is logged and
// tried again at the next interval.
func (p *Poller) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		samples, err := Read(p.conn, p.cfg.Node, time.Now())
		if err == nil {
			err = p.sink.WriteCounters(ctx, samples)
		}
		if err != nil {
			p.log.Warn("nftables counters", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
