package clickhouse

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema"
)

// ResumePointOf is ResumePoint over one replica's share of the source's
// flows (serve --shard): owns says whether the flows opened by namespace ns
// ("" for none) are this replica's; nil owns every flow. A sharded replica
// resumes after the newest flow of its own share, and drops the flows
// already stored from since through until (the newest stored flow that may
// be of its share).
//
// The share of a stored reply is not always certain: the replicas split
// replies by Hubble's is_reply, and a stored flow's is_reply also holds the
// deprecated reply flag of older agents. So since is the newest flow that
// is this share's either way, and keys are every stored flow from since on
// that may be this share's: those the stream sends again are dropped, the
// others it sends are new. Without sharding since is the newest stored flow
// and until equals since, as ResumePoint.
func (w *Writer) ResumePointOf(ctx context.Context, conn driver.Conn, source string, owns func(ns string) bool) (since, until time.Time, keys []string, err error) {
	if err := w.Open(); err != nil {
		return time.Time{}, time.Time{}, nil, err
	}
	sharded := owns != nil
	if !sharded {
		owns = func(string) bool { return true }
	}
	stored, err := LastFlowTime(ctx, conn, source)
	if err != nil {
		return time.Time{}, time.Time{}, nil, err
	}
	if sharded && !stored.IsZero() {
		if stored, err = lastOwnedFlowTime(ctx, conn, source, stored, owns); err != nil {
			return time.Time{}, time.Time{}, nil, err
		}
	}
	since = stored
	if sp := w.SpooledUntil(); sp.After(since) {
		since = sp
	}
	if since.IsZero() {
		return since, since, nil, nil
	}
	until = since
	if !stored.IsZero() {
		q := `SELECT time, node, verdict, is_reply, protocol, src_ip, dst_ip, src_port, dst_port, src_namespace, dst_namespace
			FROM flows WHERE source = ? AND toUnixTimestamp64Nano(time) >= ?`
		args := []any{source, since.UnixNano()}
		if sharded {
			// Only the rows that may be of this share: since can be well
			// behind the other replicas' newest flows.
			mine, err := ownedNamespacesSince(ctx, conn, source, since, owns)
			if err != nil {
				return time.Time{}, time.Time{}, nil, err
			}
			q += ` AND (has(?, src_namespace) OR is_reply AND dst_namespace != '' AND has(?, dst_namespace))`
			args = append(args, mine, mine)
		}
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return time.Time{}, time.Time{}, nil, fmt.Errorf("flows at the resume point: %w", err)
		}
		for rows.Next() {
			var f schema.Flow
			var verdict string
			var src, dst net.IP
			if err := rows.Scan(&f.Time, &f.Node, &verdict, &f.IsReply, &f.Protocol, &src, &dst, &f.SrcPort, &f.DstPort, &f.Src.Namespace, &f.Dst.Namespace); err != nil {
				rows.Close()
				return time.Time{}, time.Time{}, nil, err
			}
			if mine, _ := share(f.Src.Namespace, f.Dst.Namespace, f.IsReply, owns); !mine {
				continue
			}
			f.Verdict = schema.Verdict(verdict)
			f.SrcIP, _ = netip.AddrFromSlice(src)
			f.DstIP, _ = netip.AddrFromSlice(dst)
			keys = append(keys, schema.FlowKey(&f))
			if f.Time.After(until) {
				until = f.Time
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return time.Time{}, time.Time{}, nil, fmt.Errorf("flows at the resume point: %w", err)
		}
	}
	if w.spool != nil {
		for _, f := range w.spool.flowsAt(since) {
			keys = append(keys, schema.FlowKey(&f))
		}
	}
	return since, until, keys, nil
}

// share tells whether a stored flow may be, and whether it surely is, of
// the share owns selects: its opening namespace is the destination's for a
// reply that has one, the source's otherwise; a stored reply may have been
// a flow Hubble's filters took as a request (deprecated reply flag only),
// opened from its source's namespace.
func share(srcNS, dstNS string, isReply bool, owns func(string) bool) (maybe, surely bool) {
	bySource := owns(srcNS)
	if !isReply || dstNS == "" {
		return bySource, bySource
	}
	byDest := owns(dstNS)
	return byDest || bySource, byDest && bySource
}

// ownedNamespacesSince lists the namespaces of the source's flows stored
// since t that owns accepts ("" among them when it accepts "").
func ownedNamespacesSince(ctx context.Context, conn driver.Conn, source string, t time.Time, owns func(string) bool) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT arrayJoin([toString(src_namespace), toString(dst_namespace)]) FROM flows
		WHERE source = ? AND toUnixTimestamp64Nano(time) >= ?`, source, t.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("namespaces at the resume point: %w", err)
	}
	defer rows.Close()
	mine := []string{}
	for rows.Next() {
		var ns string
		if err := rows.Scan(&ns); err != nil {
			return nil, fmt.Errorf("namespaces at the resume point: %w", err)
		}
		if owns(ns) {
			mine = append(mine, ns)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("namespaces at the resume point: %w", err)
	}
	return mine, nil
}

// lastOwnedFlowTime is the time of the newest stored flow of the source
// that is surely of the share owns selects (zero if none), looking back
// from newest an hour, then a day, then over everything.
func lastOwnedFlowTime(ctx context.Context, conn driver.Conn, source string, newest time.Time, owns func(string) bool) (time.Time, error) {
	for _, back := range []time.Duration{time.Hour, 24 * time.Hour, 0} {
		q := `SELECT src_namespace, dst_namespace, is_reply, max(time) FROM flows WHERE source = ?`
		args := []any{source}
		if back > 0 {
			q += ` AND time >= ?`
			args = append(args, newest.Add(-back))
		}
		rows, err := conn.Query(ctx, q+` GROUP BY src_namespace, dst_namespace, is_reply`, args...)
		if err != nil {
			return time.Time{}, fmt.Errorf("newest stored %s flow of this shard: %w", source, err)
		}
		var last time.Time
		for rows.Next() {
			var src, dst string
			var reply bool
			var t time.Time
			if err := rows.Scan(&src, &dst, &reply, &t); err != nil {
				rows.Close()
				return time.Time{}, fmt.Errorf("newest stored %s flow of this shard: %w", source, err)
			}
			if _, surely := share(src, dst, reply, owns); surely && t.After(last) {
				last = t
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return time.Time{}, fmt.Errorf("newest stored %s flow of this shard: %w", source, err)
		}
		if !last.IsZero() {
			return last, nil
		}
	}
	return time.Time{}, nil
}
