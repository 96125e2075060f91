package clickhouse

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema"
)

// flowColumns lists the flows table's columns in the order columns.append
// fills them.
var flowColumns = []string{
	"time", "node", "source", "verdict", "drop_reason", "direction", "is_reply", "ip_version", "protocol",
	"src_ip", "dst_ip", "src_port", "dst_port", "tcp_flags",
	"src_namespace", "src_pod", "src_workload", "src_workload_kind", "src_labels", "src_identity",
	"dst_namespace", "dst_pod", "dst_workload", "dst_workload_kind", "dst_labels", "dst_identity",
	"dst_names", "l7_type", "dns_query", "dns_rcode", "http_method", "http_path", "http_status",
	"bytes", "packets", "duration_ms", "mtls", "src_principal", "dst_principal", "policy_names", "trace_id",
}

// columns is one batch of flows held column by column, the shape the native
// protocol sends, so a batch is appended to the driver with one call per
// column rather than one per value.
type columns struct {
	time                                         []time.Time
	node, source, verdict, dropReason, direction []string
	isReply                                      []bool
	ipVersion                                    []uint8
	protocol                                     []string
	srcIP, dstIP                                 [][16]byte
	srcPort, dstPort                             []uint16
	tcpFlags                                     []string
	srcNS, srcPod, srcWorkload, srcKind          []string
	srcLabels                                    []map[string]string
	srcIdentity                                  []uint32
	dstNS, dstPod, dstWorkload, dstKind          []string
	dstLabels                                    []map[string]string
	dstIdentity                                  []uint32
	dstNames                                     [][]string
	l7Type, dnsQuery                             []string
	dnsRCode                                     []uint16
	httpMethod, httpPath                         []string
	httpStatus                                   []uint16
	bytes, packets                               []uint64
	durationMs                                   []uint32
	mtls                                         []bool
	srcPrincipal, dstPrincipal                   []string
	policyNames                                  [][]string
	traceID                                      []string
	// minTime and maxTime bound the batch's flow times.
	minTime, maxTime time.Time
	// dedupToken identifies this batch's content for ClickHouse's insert
	// deduplication; it is made on the first insert attempt.
	dedupToken string
}

var tokenPrefix = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var tokenSeq atomic.Uint64

// token returns the batch's deduplication token, the same on every retry.
func (c *columns) token() string {
	if c.dedupToken == "" {
		c.dedupToken = tokenPrefix + "-" + strconv.FormatUint(tokenSeq.Add(1), 10)
	}
	return c.dedupToken
}

func (c *columns) len() int { return len(c.time) }

func (c *columns) add(f *schema.Flow) {
	if c.len() == 0 || f.Time.Before(c.minTime) {
		c.minTime = f.Time
	}
	if c.len() == 0 || f.Time.After(c.maxTime) {
		c.maxTime = f.Time
	}
	c.time = append(c.time, f.Time)
	c.node = append(c.node, f.Node)
	c.source = append(c.source, string(f.Source))
	c.verdict = append(c.verdict, string(f.Verdict))
	c.dropReason = append(c.dropReason, f.DropReason)
	c.direction = append(c.direction, string(f.Direction))
	c.isReply = append(c.isReply, f.IsReply)
	c.ipVersion = append(c.ipVersion, f.IPVersion)
	c.protocol = append(c.protocol, f.Protocol)
	c.srcIP = append(c.srcIP, f.SrcIP.As16())
	c.dstIP = append(c.dstIP, f.DstIP.As16())
	c.srcPort = append(c.srcPort, f.SrcPort)
	c.dstPort = append(c.dstPort, f.DstPort)
	c.tcpFlags = append(c.tcpFlags, f.TCPFlags)
	c.srcNS = append(c.srcNS, f.Src.Namespace)
	c.srcPod = append(c.srcPod, f.Src.Pod)
	c.srcWorkload = append(c.srcWorkload, f.Src.Workload)
	c.srcKind = append(c.srcKind, f.Src.WorkloadKind)
	c.srcLabels = append(c.srcLabels, f.Src.Labels)
	c.srcIdentity = append(c.srcIdentity, f.Src.Identity)
	c.dstNS = append(c.dstNS, f.Dst.Namespace)
	c.dstPod = append(c.dstPod, f.Dst.Pod)
	c.dstWorkload = append(c.dstWorkload, f.Dst.Workload)
	c.dstKind = append(c.dstKind, f.Dst.WorkloadKind)
	c.dstLabels = append(c.dstLabels, f.Dst.Labels)
	c.dstIdentity = append(c.dstIdentity, f.Dst.Identity)
	c.dstNames = append(c.dstNames, nonNil(f.DstNames))
	c.l7Type = append(c.l7Type, f.L7Type)
	c.dnsQuery = append(c.dnsQuery, f.DNSQuery)
	c.dnsRCode = append(c.dnsRCode, f.DNSRCode)
	c.httpMethod = append(c.httpMethod, f.HTTPMethod)
	c.httpPath = append(c.httpPath, f.HTTPPath)
	c.httpStatus = append(c.httpStatus, f.HTTPStatus)
	c.bytes = append(c.bytes, f.Bytes)
	c.packets = append(c.packets, f.Packets)
	c.durationMs = append(c.durationMs, f.DurationMs)
	c.mtls = append(c.mtls, f.MTLS)
	c.srcPrincipal = append(c.srcPrincipal, f.SrcPrincipal)
	c.dstPrincipal = append(c.dstPrincipal, f.DstPrincipal)
	c.policyNames = append(c.policyNames, nonNil(f.PolicyNames))
	c.traceID = append(c.traceID, f.TraceID)
}

var emptyStrings = []string{}

func nonNil(s []string) []string {
	if s == nil {
		return emptyStrings
	}
	return s
}

// values returns the column slices in flowColumns order.
func (c *columns) values() []any {
	return []any{
		c.time, c.node, c.source, c.verdict, c.dropReason, c.direction, c.isReply, c.ipVersion, c.protocol,
		c.srcIP, c.dstIP, c.srcPort, c.dstPort, c.tcpFlags,
		c.srcNS, c.srcPod, c.srcWorkload, c.srcKind, c.srcLabels, c.srcIdentity,
		c.dstNS, c.dstPod, c.dstWorkload, c.dstKind, c.dstLabels, c.dstIdentity,
		c.dstNames, c.l7Type, c.dnsQuery, c.dnsRCode, c.httpMethod, c.httpPath, c.httpStatus,
		c.bytes, c.packets, c.durationMs, c.mtls, c.srcPrincipal, c.dstPrincipal, c.policyNames, c.traceID,
	}
}

// appendTo appends the whole batch to a prepared driver batch.
func (c *columns) appendTo(b driver.Batch) error {
	for i, v := range c.values() {
		if err := b.Column(i).Append(v); err != nil {
			return fmt.Errorf("column %s: %w", flowColumns[i], err)
		}
	}
	return nil
}

// reset empties the batch, keeping its capacity for reuse.
func (c *columns) reset() {
	*c = columns{
		time: c.time[:0], node: c.node[:0], source: c.source[:0], verdict: c.verdict[:0], dropReason: c.dropReason[:0],
		direction: c.direction[:0], isReply: c.isReply[:0], ipVersion: c.ipVersion[:0], protocol: c.protocol[:0],
		srcIP: c.srcIP[:0], dstIP: c.dstIP[:0], srcPort: c.srcPort[:0], dstPort: c.dstPort[:0], tcpFlags: c.tcpFlags[:0],
		srcNS: c.srcNS[:0], srcPod: c.srcPod[:0], srcWorkload: c.srcWorkload[:0], srcKind: c.srcKind[:0],
		srcLabels: clearMaps(c.srcLabels), srcIdentity: c.srcIdentity[:0],
		dstNS: c.dstNS[:0], dstPod: c.dstPod[:0], dstWorkload: c.dstWorkload[:0], dstKind: c.dstKind[:0],
		dstLabels: clearMaps(c.dstLabels), dstIdentity: c.dstIdentity[:0],
		dstNames: clearSlices(c.dstNames), l7Type: c.l7Type[:0], dnsQuery: c.dnsQuery[:0], dnsRCode: c.dnsRCode[:0],
		httpMethod: c.httpMethod[:0], httpPath: c.httpPath[:0], httpStatus: c.httpStatus[:0],
		bytes: c.bytes[:0], packets: c.packets[:0], durationMs: c.durationMs[:0], mtls: c.mtls[:0],
		srcPrincipal: c.srcPrincipal[:0], dstPrincipal: c.dstPrincipal[:0], policyNames: clearSlices(c.policyNames), traceID: c.traceID[:0],
	}
}

// clearMaps and clearSlices drop references so reused batches do not pin
// old flows' maps and slices in memory.
func clearMaps(m []map[string]string) []map[string]string {
	clear(m)
	return m[:0]
}

func clearSlices(s [][]string) [][]string {
	clear(s)
	return s[:0]
}
