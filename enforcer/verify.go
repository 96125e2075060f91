package enforcer

import (
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// DeniedFlow is an observed flow the policies would deny: one line of
// verify's output.
type DeniedFlow struct {
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Dest     string    `json:"destination"`
	Port     uint16    `json:"dst_port"`
	Protocol string    `json:"protocol"`
	Observed string    `json:"observed_verdict"`
	Reason   string    `json:"reason"`
	// Intended is set when recommend left this traffic out on purpose.
	Intended string `json:"intended,omitempty"`
}

// DeniedRequest is an observed HTTP request the layer-7 policies would
// deny.
type DeniedRequest struct {
	Time         time.Time
	Source, Dest string
	Port         uint16
	Protocol     string
	Method, Path string
	Reason       string
}

// Verification is verify's judgement of observed traffic by a policy set,
// the CI gate for policy changes: each flow the policies would deny is
// either intended (recommend left its edge out on purpose) or, when it was
// forwarded, a regression; the verdict fails on a regression or on an HTTP
// request the layer-7 policies would deny.
type Verification struct {
	verifier *Verifier
	report   *VerifyReport
	leftOut  map[string]string // edge key → why recommend left it out
	l7       *L7Policies
	verdict  VerifyVerdict
}

// VerifyVerdict is what a verification found, for the summary and the
// exit status.
type VerifyVerdict struct {
	Policies int
	// Checked flows were judged; Denied of them would be denied: Intended
	// on an edge recommend left out, Regressions forwarded when observed.
	Checked, Denied, Intended, Regressions int
	// RegressedEdges counts the observed edges that would lose access.
	RegressedEdges int
	// DirectionUnknown and Unjudged count flows not judged: no signal said
	// which end opened the connection, or a pod end's labels were unknown.
	DirectionUnknown, Unjudged int
	// L7Judged HTTP requests were judged by the layer-7 policies; L7Denied
	// of them would be denied.
	L7Judged, L7Denied int
}

// Failed is the CI gate: observed traffic would lose access.
func (v VerifyVerdict) Failed() bool { return v.Regressions > 0 || v.L7Denied > 0 }

// NewVerification prepares the judgement of observed flows by policies.
// sources (LoadDirSources; nil for policies read from the cluster or
// stdin) place CI annotations; leftOut (LoadLeftOut) tells intended
// denials.
func NewVerification(policies []networkingv1.NetworkPolicy, sources map[string]PolicySource, leftOut map[string]string) (*Verification, error) {
	verifier, err := NewVerifier(policies)
	if err != nil {
		return nil, err
	}
	if leftOut == nil {
		leftOut = map[string]string{}
	}
	return &Verification{verifier: verifier, report: NewVerifyReport(policies, sources), leftOut: leftOut,
		verdict: VerifyVerdict{Policies: len(policies)}}, nil
}

// Learn is the first pass over the flows: the ports each end listens on
// tell who opened the flows no other signal does (Verifier.Learn).
func (v *Verification) Learn(f *schema.Flow) { v.verifier.Learn(f) }

// Judge judges one flow (after every flow was learnt), records it in the
// report and returns it as a DeniedFlow when the policies would deny it.
func (v *Verification) Judge(f *schema.Flow) (DeniedFlow, bool) {
	d, ok := v.verifier.Check(f)
	if !ok {
		return DeniedFlow{}, false
	}
	v.verdict.Checked++
	why := ""
	if e, reason := EdgeOf(f); reason == "" {
		why = v.leftOut[EdgeKey(e)]
	}
	v.report.Add(f, d, why)
	if d.Allowed {
		return DeniedFlow{}, false
	}
	v.verdict.Denied++
	o := DeniedFlow{Time: f.Time, Source: endpointText(f.Src, f.SrcIP.String()), Dest: endpointText(f.Dst, f.DstIP.String()),
		Port: f.DstPort, Protocol: f.Protocol, Observed: string(f.Verdict), Reason: d.Reason}
	if why != "" {
		o.Intended = why
		v.verdict.Intended++
	} else if Counts(f) {
		v.verdict.Regressions++
	}
	return o, true
}

// SetL7 has JudgeRequest judge HTTP requests by set's layer-7 policies.
func (v *Verification) SetL7(set *L7Policies) { v.l7 = set }

// JudgeRequest judges one observed request by the layer-7 policies of
// SetL7, returning it when they would deny it.
func (v *Verification) JudgeRequest(f *schema.Flow) (DeniedRequest, bool) {
	if v.l7 == nil {
		return DeniedRequest{}, false
	}
	judged, allowed, why := v.l7.JudgeL7(f)
	if !judged {
		return DeniedRequest{}, false
	}
	v.verdict.L7Judged++
	if allowed {
		return DeniedRequest{}, false
	}
	v.verdict.L7Denied++
	return DeniedRequest{Time: f.Time, Source: endpointText(f.Src, f.SrcIP.String()), Dest: endpointText(f.Dst, f.DstIP.String()),
		Port: f.DstPort, Protocol: f.Protocol, Method: f.HTTPMethod, Path: f.HTTPPath, Reason: why}, true
}

// Report is the per-edge report for CI (GitHub annotations, JUnit).
func (v *Verification) Report() *VerifyReport { return v.report }

// Verdict is what was found so far.
func (v *Verification) Verdict() VerifyVerdict {
	out := v.verdict
	out.RegressedEdges = v.report.Regressions()
	out.DirectionUnknown, out.Unjudged = v.verifier.DirectionUnknown, v.verifier.Unjudged
	return out
}

// endpointText names a flow's end in verify's output: the pod, else the
// workload and address, else the address.
func endpointText(e schema.Endpoint, ip string) string {
	switch {
	case e.Pod != "":
		return e.Namespace + "/" + e.Pod
	case e.Workload != "":
		return e.Workload + " " + ip
	}
	return ip
}
