package envoy

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/flowwarden/flowwarden/schema"
)

// Parser turns access-log lines of any supported format into flows.
type Parser struct {
	json JSONParser
}

// Parse reads one line (JSON or text, detected per line).
func (p *Parser) Parse(line []byte) (AccessLog, error) {
	if t := bytes.TrimLeft(line, " \t"); len(t) > 0 && t[0] == '{' {
		return p.json.Parse(line)
	}
	return ParseText(string(line))
}

// ToFlow maps an access-log entry to a flow record. Outbound entries are the
// client sidecar's view (source: the app, destination: the upstream host, or
// the original destination when no upstream was picked); inbound entries the
// server sidecar's (source: the peer, destination: this pod).
func ToFlow(a *AccessLog) schema.Flow {
	c := ParseCluster(a.UpstreamCluster)
	f := schema.Flow{
		Time:       a.StartTime,
		Source:     schema.SourceEnvoy,
		Verdict:    schema.VerdictForwarded,
		Protocol:   "TCP",
		Bytes:      a.BytesReceived + a.BytesSent,
		DurationMs: uint32(min(a.DurationMs, 1<<32-1)),
		HTTPStatus: uint16(a.ResponseCode),
	}
	if a.Method != "" {
		f.L7Type = "http"
		f.HTTPMethod = a.Method
		f.HTTPPath = a.Path
		if i := strings.IndexAny(f.HTTPPath, "?#"); i >= 0 {
			f.HTTPPath = f.HTTPPath[:i]
		}
	}
	src, srcPort := splitHostPort(a.DownstreamRemoteAddr)
	var dst netip.Addr
	var dstPort uint16
	switch c.Direction {
	case "inbound":
		f.Direction = schema.DirectionIngress
		dst, dstPort = splitHostPort(a.DownstreamLocalAddr)
	default:
		f.Direction = schema.DirectionEgress
		dst, dstPort = splitHostPort(a.UpstreamHost)
		if !dst.IsValid() {
			dst, dstPort = splitHostPort(a.DownstreamLocalAddr)
		}
	}
	if a.Format == "envoy-text" {
		f.Direction = schema.DirectionUnknown
	}
	f.SrcIP, f.SrcPort, f.DstIP, f.DstPort = src, srcPort, dst, dstPort
	switch {
	case f.SrcIP.Is4():
		f.IPVersion = 4
	case f.SrcIP.Is6():
		f.IPVersion = 6
	}
	// Names the destination was reached by.
	for _, n := range []string{hostOnly(a.Authority), c.Host, sniHost(a.RequestedServerName)} {
		if n != "" && !contains(f.DstNames, n) {
			if _, err := netip.ParseAddr(n); err != nil {
				f.DstNames = append(f.DstNames, n)
			}
		}
	}
	// Denials the mesh made.
	switch {
	case c.Direction == "blackhole":
		f.Verdict, f.DropReason = schema.VerdictDropped, "MESH_BLACKHOLE"
	case a.RouteName == "block_all":
		f.Verdict, f.DropReason = schema.VerdictDropped, "MESH_REGISTRY_ONLY"
	case strings.Contains(a.ResponseFlags, "UAEX"):
		f.Verdict, f.DropReason = schema.VerdictDropped, "MESH_EXT_AUTHZ_DENIED"
	case strings.HasPrefix(a.ResponseCodeDetails, "rbac_access_denied"):
		f.Verdict, f.DropReason = schema.VerdictDropped, "MESH_RBAC_DENIED"
	}
	// Istio's inbound SNI for mutual TLS is outbound_.<port>_.<subset>_.<host>.
	if c.Direction == "inbound" && strings.HasPrefix(a.RequestedServerName, "outbound_.") {
		f.MTLS = true
	}
	return f
}

func splitHostPort(s string) (netip.Addr, uint16) {
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:] // Envoy's default format writes "tcp://10.0.2.1:80"
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), ap.Port()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0
	}
	return netip.Addr{}, 0
}

func hostOnly(authority string) string {
	if authority == "" {
		return ""
	}
	if h, _, ok := strings.Cut(authority, ":"); ok && !strings.Contains(authority, "]") {
		return h
	}
	return authority
}

// sniHost extracts the service host from Istio's mTLS SNI.
func sniHost(sni string) string {
	if !strings.HasPrefix(sni, "outbound_.") {
		return sni
	}
	parts := strings.SplitN(sni, "_.", 4)
	if len(parts) == 4 {
		return parts[3]
	}
	return ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
