package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

// eachFull calls fn for every observed flow with all its columns (L7,
// principals, mTLS): what the L7 policies are made from.
func (s *flowSource) eachFull(ctx context.Context, g *globals, fn func(*schema.Flow)) error {
	if len(s.files) > 0 || !s.win.given() {
		return s.each(ctx, g, fn)
	}
	return s.readStored(ctx, g, func(conn driver.Conn, since, until time.Time, n *atomic.Int64) error {
		return clickhouse.EachFlow(ctx, conn, clickhouse.AllColumns, since, until, func(f *schema.Flow) {
			n.Add(1)
			fn(f)
		})
	})
}

// ciliumL7 adds the HTTP and DNS rules to the Cilium policies, proves them
// against the observed requests and prints what each port got.
func ciliumL7(ctx context.Context, g *globals, src *flowSource, w io.Writer, cps []enforcer.CiliumPolicy, cfg enforcer.L7Config, prefix string) error {
	obs := enforcer.NewL7Observations()
	if err := src.eachFull(ctx, g, obs.Add); err != nil {
		return err
	}
	notes := enforcer.AddCiliumL7(cps, obs, cfg, prefix)
	if bad := enforcer.ProveCiliumL7(cps, obs, prefix); len(bad) > 0 {
		for _, b := range bad {
			g.log.Error("generated L7 rules disagree with observed requests", "problem", b)
		}
		return fmt.Errorf("%d L7 checks failed: not written (a bug; please report it)", len(bad))
	}
	for _, n := range notes {
		fmt.Fprintf(w, "  L7 %s\n", n)
	}
	return nil
}
