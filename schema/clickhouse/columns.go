package clickhouse

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/flowwarden/flowwarden/schema"
)

// columns is one batch of flows held column by column in the native
// protocol's own typed columns (ch-go, the protocol layer of clickhouse-go),
// so a flow is appended without reflection or boxing and the batch is sent
// as it is held. A batch can be sent again unchanged when an insert is retried.
type columns struct {
	n                                            int
	time                                         proto.ColDateTime64
	node, source, verdict, dropReason, direction *lowCardinality
	isReply                                      proto.ColBool
	ipVersion                                    proto.ColUInt8
	protocol                                     *lowCardinality
	srcIP, dstIP                                 proto.ColIPv6
	srcPort, dstPort                             proto.ColUInt16
	tcpFlags                                     *lowCardinality
	srcNS, srcPod, srcWorkload, srcKind          *lowCardinality
	srcLabels                                    *labelsColumn
	srcIdentity                                  proto.ColUInt32
	dstNS, dstPod, dstWorkload, dstKind          *lowCardinality
	dstLabels                                    *labelsColumn
	dstIdentity                                  proto.ColUInt32
	dstNames                                     *proto.ColArr[string]
	l7Type                                       *lowCardinality
	dnsQuery                                     proto.ColStr
	dnsRCode                                     proto.ColUInt16
	dnsQType                                     *lowCardinality
	httpMethod                                   *lowCardinality
	httpPath                                     proto.ColStr
	httpStatus                                   proto.ColUInt16
	bytes, packets                               proto.ColUInt64
	durationMs                                   proto.ColUInt32
	mtls                                         proto.ColBool
	srcPrincipal, dstPrincipal                   *lowCardinality
	policyNames                                  *proto.ColArr[string]
	traceID                                      proto.ColStr
	input                                        proto.Input
	// oldest is the earliest flow time in the batch (for the latency metric).
	oldest time.Time
	// dedupToken identifies this batch's content for ClickHouse's insert
	// deduplication; it is made on the first insert attempt.
	dedupToken string
}

func lc() *lowCardinality { return newLowCardinality() }

func newColumns() *columns {
	c := &columns{
		node: lc(), source: lc(), verdict: lc(), dropReason: lc(), direction: lc(), protocol: lc(), tcpFlags: lc(),
		srcNS: lc(), srcPod: lc(), srcWorkload: lc(), srcKind: lc(), srcLabels: newLabelsColumn(),
		dstNS: lc(), dstPod: lc(), dstWorkload: lc(), dstKind: lc(), dstLabels: newLabelsColumn(),
		dstNames: new(proto.ColStr).Array(), l7Type: lc(), dnsQType: lc(), httpMethod: lc(),
		srcPrincipal: lc(), dstPrincipal: lc(), policyNames: proto.NewArray[string](newLowCardinality()),
	}
	c.time = *new(proto.ColDateTime64).WithPrecision(proto.PrecisionNano).WithLocation(time.UTC)
	c.input = proto.Input{
		{Name: "time", Data: &c.time}, {Name: "node", Data: c.node}, {Name: "source", Data: c.source},
		{Name: "verdict", Data: c.verdict}, {Name: "drop_reason", Data: c.dropReason}, {Name: "direction", Data: c.direction},
		{Name: "is_reply", Data: &c.isReply}, {Name: "ip_version", Data: &c.ipVersion}, {Name: "protocol", Data: c.protocol},
		{Name: "src_ip", Data: &c.srcIP}, {Name: "dst_ip", Data: &c.dstIP},
		{Name: "src_port", Data: &c.srcPort}, {Name: "dst_port", Data: &c.dstPort}, {Name: "tcp_flags", Data: c.tcpFlags},
		{Name: "src_namespace", Data: c.srcNS}, {Name: "src_pod", Data: c.srcPod}, {Name: "src_workload", Data: c.srcWorkload},
		{Name: "src_workload_kind", Data: c.srcKind}, {Name: "src_labels", Data: c.srcLabels}, {Name: "src_identity", Data: &c.srcIdentity},
		{Name: "dst_namespace", Data: c.dstNS}, {Name: "dst_pod", Data: c.dstPod}, {Name: "dst_workload", Data: c.dstWorkload},
		{Name: "dst_workload_kind", Data: c.dstKind}, {Name: "dst_labels", Data: c.dstLabels}, {Name: "dst_identity", Data: &c.dstIdentity},
		{Name: "dst_names", Data: c.dstNames}, {Name: "l7_type", Data: c.l7Type}, {Name: "dns_query", Data: &c.dnsQuery},
		{Name: "dns_rcode", Data: &c.dnsRCode}, {Name: "dns_qtype", Data: c.dnsQType}, {Name: "http_method", Data: c.httpMethod}, {Name: "http_path", Data: &c.httpPath},
		{Name: "http_status", Data: &c.httpStatus}, {Name: "bytes", Data: &c.bytes}, {Name: "packets", Data: &c.packets},
		{Name: "duration_ms", Data: &c.durationMs}, {Name: "mtls", Data: &c.mtls},
		{Name: "src_principal", Data: c.srcPrincipal}, {Name: "dst_principal", Data: c.dstPrincipal},
		{Name: "policy_names", Data: c.policyNames}, {Name: "trace_id", Data: &c.traceID},
	}
	return c
}

func (c *columns) len() int { return c.n }

// reserve makes room for n rows in the fixed-width columns, the keys of the
// LowCardinality ones and the offsets of strings, arrays and maps, so that
// filling a new batch does not copy them as they grow (string bytes, label
// entries and dictionaries still grow as needed).
func (c *columns) reserve(n int) {
	c.time.Data = slices.Grow(c.time.Data, n)
	c.isReply = slices.Grow(c.isReply, n)
	c.mtls = slices.Grow(c.mtls, n)
	c.ipVersion = slices.Grow(c.ipVersion, n)
	c.srcIP = slices.Grow(c.srcIP, n)
	c.dstIP = slices.Grow(c.dstIP, n)
	c.srcPort = slices.Grow(c.srcPort, n)
	c.dstPort = slices.Grow(c.dstPort, n)
	c.dnsRCode = slices.Grow(c.dnsRCode, n)
	c.httpStatus = slices.Grow(c.httpStatus, n)
	c.srcIdentity = slices.Grow(c.srcIdentity, n)
	c.dstIdentity = slices.Grow(c.dstIdentity, n)
	c.durationMs = slices.Grow(c.durationMs, n)
	c.bytes = slices.Grow(c.bytes, n)
	c.packets = slices.Grow(c.packets, n)
	for _, l := range []*lowCardinality{c.node, c.source, c.verdict, c.dropReason, c.direction, c.protocol, c.tcpFlags,
		c.srcNS, c.srcPod, c.srcWorkload, c.srcKind, c.dstNS, c.dstPod, c.dstWorkload, c.dstKind,
		c.l7Type, c.dnsQType, c.httpMethod, c.srcPrincipal, c.dstPrincipal} {
		l.keys = slices.Grow(l.keys, n)
	}
	for _, s := range []*proto.ColStr{&c.dnsQuery, &c.httpPath, &c.traceID} {
		s.Pos = slices.Grow(s.Pos, n)
	}
	c.srcLabels.rows = slices.Grow(c.srcLabels.rows, n)
	c.dstLabels.rows = slices.Grow(c.dstLabels.rows, n)
	c.dstNames.Offsets = slices.Grow(c.dstNames.Offsets, n)
	c.policyNames.Offsets = slices.Grow(c.policyNames.Offsets, n)
}

func (c *columns) add(f *schema.Flow) {
	if c.n == 0 || f.Time.Before(c.oldest) {
		c.oldest = f.Time
	}
	c.n++
	c.time.Append(f.Time)
	c.node.Append(f.Node)
	c.source.Append(string(f.Source))
	c.verdict.Append(string(f.Verdict))
	c.dropReason.Append(f.DropReason)
	c.direction.Append(string(f.Direction))
	c.isReply.Append(f.IsReply)
	c.ipVersion.Append(f.IPVersion)
	c.protocol.Append(f.Protocol)
	c.srcIP.Append(proto.IPv6(f.SrcIP.As16()))
	c.dstIP.Append(proto.IPv6(f.DstIP.As16()))
	c.srcPort.Append(f.SrcPort)
	c.dstPort.Append(f.DstPort)
	c.tcpFlags.Append(f.TCPFlags)
	c.srcNS.Append(f.Src.Namespace)
	c.srcPod.Append(f.Src.Pod)
	c.srcWorkload.Append(f.Src.Workload)
	c.srcKind.Append(f.Src.WorkloadKind)
	c.srcLabels.Append(f.Src.Labels)
	c.srcIdentity.Append(f.Src.Identity)
	c.dstNS.Append(f.Dst.Namespace)
	c.dstPod.Append(f.Dst.Pod)
	c.dstWorkload.Append(f.Dst.Workload)
	c.dstKind.Append(f.Dst.WorkloadKind)
	c.dstLabels.Append(f.Dst.Labels)
	c.dstIdentity.Append(f.Dst.Identity)
	c.dstNames.Append(f.DstNames)
	c.l7Type.Append(f.L7Type)
	c.dnsQuery.Append(f.DNSQuery)
	c.dnsRCode.Append(f.DNSRCode)
	c.dnsQType.Append(f.DNSQType)
	c.httpMethod.Append(f.HTTPMethod)
	c.httpPath.Append(f.HTTPPath)
	c.httpStatus.Append(f.HTTPStatus)
	c.bytes.Append(f.Bytes)
	c.packets.Append(f.Packets)
	c.durationMs.Append(f.DurationMs)
	c.mtls.Append(f.MTLS)
	c.srcPrincipal.Append(f.SrcPrincipal)
	c.dstPrincipal.Append(f.DstPrincipal)
	c.policyNames.Append(f.PolicyNames)
	c.traceID.Append(f.TraceID)
}

// reset empties the batch, keeping its buffers for reuse.
func (c *columns) reset() {
	c.input.Reset()
	c.n = 0
	c.oldest = time.Time{}
	c.dedupToken = ""
}

// counts tallies the rows by source and verdict (for the metrics), from
// the dictionary keys of those two columns: runs of one pair are counted
// without a look-up.
func (c *columns) counts(fn func(source, verdict string, n int)) {
	src, verdict := c.source.keys, c.verdict.keys
	tally := map[[2]uint32]int{}
	for i := 0; i < len(src); {
		j := i + 1
		for j < len(src) && src[j] == src[i] && verdict[j] == verdict[i] {
			j++
		}
		tally[[2]uint32{src[i], verdict[i]}] += j - i
		i = j
	}
	for k, n := range tally {
		fn(c.source.index.Row(int(k[0])), c.verdict.index.Row(int(k[1])), n)
	}
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
