package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/schema"
)

// Reader reads what the page shows from storage: flow groups and the
// newest findings. It satisfies enforcer/webui's Store, so the page knows
// no table.
type Reader struct {
	conn driver.Conn
}

// NewReader returns a Reader over conn (a read-only login will do).
func NewReader(conn driver.Conn) *Reader { return &Reader{conn: conn} }

// EachFlowGroup calls fn for each group of like flows in [since, until).
func (r *Reader) EachFlowGroup(ctx context.Context, since, until time.Time, fn func(f *schema.Flow, flows uint64, first, last time.Time)) error {
	return EachFlowGroup(ctx, r.conn, since, until, fn)
}

// RecentFindings returns the newest n findings (by start, newest first),
// each in its latest state.
func (r *Reader) RecentFindings(ctx context.Context, n int) ([]schema.FindingRecord, error) {
	rows, err := r.conn.Query(ctx, `SELECT start, severity, detector, namespace, workload, peer, summary, status, query
		FROM findings FINAL ORDER BY start DESC LIMIT `+fmt.Sprint(n))
	if err != nil {
		return nil, fmt.Errorf("recent findings: %w", err)
	}
	defer rows.Close()
	var out []schema.FindingRecord
	for rows.Next() {
		var f schema.FindingRecord
		if err := rows.Scan(&f.Start, &f.Severity, &f.Detector, &f.Namespace, &f.Workload, &f.Peer, &f.Summary, &f.Status, &f.Query); err != nil {
			return nil, fmt.Errorf("recent findings: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Findings returns the findings whose span meets [since, until), each in
// its latest state, with their evidence (samples and query excepted): what
// the page's recommendation holds back.
func (r *Reader) Findings(ctx context.Context, since, until time.Time) ([]schema.Finding, error) {
	rows, err := r.conn.Query(ctx, `SELECT id, detector, severity, namespace, workload, peer, summary, start, end, status, flows, evidence
		FROM findings FINAL WHERE end >= ? AND start < ? ORDER BY start, id`, since, until)
	if err != nil {
		return nil, fmt.Errorf("findings: %w", err)
	}
	defer rows.Close()
	var out []schema.Finding
	for rows.Next() {
		var (
			f                        schema.Finding
			severity, status, evJSON string
		)
		if err := rows.Scan(&f.ID, &f.Detector, &severity, &f.Namespace, &f.Workload, &f.Peer, &f.Summary, &f.Start, &f.End, &status,
			&f.Evidence.Flows, &evJSON); err != nil {
			return nil, fmt.Errorf("findings: %w", err)
		}
		f.Severity, f.Status = schema.Severity(severity), schema.FindingStatus(status)
		var ev schema.EvidenceRecord
		if err := json.Unmarshal([]byte(evJSON), &ev); err == nil {
			f.Evidence.Window, _ = time.ParseDuration(ev.Window)
			f.Evidence.Bytes, f.Evidence.Metric = ev.Bytes, ev.Metric
			f.Evidence.Observed, f.Evidence.Baseline, f.Evidence.Threshold = ev.Observed, ev.Baseline, ev.Threshold
		}
		out = append(out, f)
	}
	return out, rows.Err()
}
