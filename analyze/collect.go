package analyze

import (
	"sort"
	"sync"
	"time"

	"github.com/flowwarden/flowwarden/schema"
)

// Collector keeps the latest state of every finding it is given, for
// offline runs and tests. It is safe for concurrent use.
type Collector struct {
	mu   sync.Mutex
	last map[[2]string]schema.Finding // (ID, start) → latest
}

// Finding implements FindingSink.
func (c *Collector) Finding(f schema.Finding) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[[2]string]schema.Finding{}
	}
	c.last[[2]string{f.ID, f.Start.String()}] = f
}

// Findings returns the findings sorted by start, detector and subject.
func (c *Collector) Findings() []schema.Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]schema.Finding, 0, len(c.last))
	for _, f := range c.last {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		if a.Detector != b.Detector {
			return a.Detector < b.Detector
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Workload+a.Peer < b.Workload+b.Peer
	})
	return out
}

// FindingRecord is a finding as flowwarden prints and stores it.
type FindingRecord struct {
	ID        string         `json:"id"`
	Detector  string         `json:"detector"`
	Severity  string         `json:"severity"`
	Namespace string         `json:"namespace"`
	Workload  string         `json:"workload,omitempty"`
	Peer      string         `json:"peer,omitempty"`
	Summary   string         `json:"summary"`
	Start     time.Time      `json:"start"`
	End       time.Time      `json:"end"`
	Status    string         `json:"status"`
	Evidence  EvidenceRecord `json:"evidence"`
	Query     string         `json:"query"`
}

// EvidenceRecord is the evidence of a finding.
type EvidenceRecord struct {
	Window    string         `json:"window"`
	Flows     uint64         `json:"flows"`
	Bytes     uint64         `json:"bytes,omitempty"`
	Metric    string         `json:"metric"`
	Observed  float64        `json:"observed"`
	Baseline  float64        `json:"baseline"`
	Threshold float64        `json:"threshold"`
	Samples   []SampleRecord `json:"samples"`
}

// SampleRecord is one example flow behind a finding.
type SampleRecord struct {
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Dest     string    `json:"destination"`
	DstAddr  string    `json:"dst_addr"`
	DstPort  uint16    `json:"dst_port"`
	Protocol string    `json:"protocol"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"drop_reason,omitempty"`
}

// Record converts a finding for output.
func Record(f schema.Finding) FindingRecord {
	r := FindingRecord{ID: f.ID, Detector: f.Detector, Severity: string(f.Severity), Namespace: f.Namespace,
		Workload: f.Workload, Peer: f.Peer, Summary: f.Summary, Start: f.Start.UTC(), End: f.End.UTC(), Status: string(f.Status),
		Query: f.Query,
		Evidence: EvidenceRecord{Window: f.Evidence.Window.String(), Flows: f.Evidence.Flows, Bytes: f.Evidence.Bytes,
			Metric: f.Evidence.Metric, Observed: f.Evidence.Observed, Baseline: f.Evidence.Baseline, Threshold: f.Evidence.Threshold,
			Samples: []SampleRecord{}}}
	for _, s := range f.Evidence.Samples {
		r.Evidence.Samples = append(r.Evidence.Samples, SampleRecord{Time: s.Time.UTC(), Source: endpointName(s.Src), Dest: endpointName(s.Dst),
			DstAddr: s.DstIP.String(), DstPort: s.DstPort, Protocol: s.Protocol, Verdict: string(s.Verdict), Reason: s.DropReason})
	}
	return r
}

func endpointName(e schema.Endpoint) string {
	switch {
	case e.Pod != "":
		return e.Namespace + "/" + e.Pod
	case e.Workload != "":
		return e.Workload
	}
	return ""
}
