package hostfw

import (
	"fmt"

	"github.com/flowwarden/flowwarden/schema"
)

// FromFlows builds the host firewall of cfg.Node from recorded traffic:
// each calls its argument for every flow of the window, of which the
// conntrack flows count. A window without conntrack flows, or without any
// inbound to the node, is refused: the ruleset would allow only its fixed
// rules.
func FromFlows(cfg Config, each func(fn func(*schema.Flow)) error) (*Ruleset, error) {
	b, err := NewBuilder(cfg)
	if err != nil {
		return nil, err
	}
	conntrackFlows := 0
	err = each(func(f *schema.Flow) {
		if f.Source == schema.SourceConntrack {
			conntrackFlows++
			b.Add(f)
		}
	})
	if err != nil {
		return nil, err
	}
	rs := b.Build()
	if conntrackFlows == 0 {
		return nil, fmt.Errorf("no conntrack flows in the window: run `serve --conntrack` on the node first (a ruleset from no traffic would allow only the fixed rules)")
	}
	if rs.Observed == 0 {
		if len(cfg.Addresses) == 0 {
			return nil, fmt.Errorf("none of %d conntrack flows was recorded as inbound to node %q: check --node, or give --node-address", conntrackFlows, cfg.Node)
		}
		return nil, fmt.Errorf("none of %d conntrack flows was inbound to node %q at %v: check --node and --node-address", conntrackFlows, cfg.Node, cfg.Addresses)
	}
	return rs, nil
}
