package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	if s.files.given() || !s.win.given() {
		return s.each(ctx, g, fn)
	}
	return s.readStored(ctx, g, func(conn driver.Conn, since, until time.Time, n *atomic.Int64) error {
		return clickhouse.EachFlow(ctx, conn, clickhouse.AllColumns, since, until, func(f *schema.Flow) {
			n.Add(1)
			fn(f)
		})
	})
}

// ciliumL7 adds the HTTP and DNS rules to the Cilium policies, proven
// against the observed requests (enforcer.RecommendCiliumL7), and prints
// what each port got.
func ciliumL7(ctx context.Context, g *globals, src *flowSource, w io.Writer, cps []enforcer.CiliumPolicy, cfg enforcer.L7Config, prefix string) error {
	obs := enforcer.NewL7Observations()
	if err := src.eachFull(ctx, g, obs.Add); err != nil {
		return err
	}
	notes, err := enforcer.RecommendCiliumL7(cps, obs, cfg, prefix)
	if err != nil {
		logL7Proof(g, err, "generated L7 rules disagree with observed requests")
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(w, "  L7 %s\n", n)
	}
	return nil
}

// logL7Proof logs each problem of an *enforcer.L7ProofError.
func logL7Proof(g *globals, err error, msg string) {
	var proof *enforcer.L7ProofError
	if errors.As(err, &proof) {
		for _, b := range proof.Problems {
			g.log.Error(msg, "problem", b)
		}
	}
}

// istioRecommend writes one ALLOW AuthorizationPolicy per workload from the
// inbound requests the sidecars logged (proven against them first), and
// PeerAuthentication STRICT for each namespace where nobody called in
// plaintext (enforcer.RecommendIstio); the other namespaces are listed
// with their plaintext callers. The detectors run over the same traffic
// (unless allowFlagged) and the requests that are evidence of a finding
// are held back, as for the other flavours.
func istioRecommend(ctx context.Context, g *globals, src *flowSource, w io.Writer, output *outputFlag, out string, cfg enforcer.L7Config, prefix, trustDomain string, allowFlagged bool) error {
	obs := enforcer.NewIstioObservations(trustDomain)
	var flagged enforcer.Config
	if err := learnFlagged(ctx, g, src, &flagged, allowFlagged, func() error { return src.eachFull(ctx, g, obs.Add) }); err != nil {
		return err
	}
	cfg.Flagged = flagged.Flagged
	rec, err := enforcer.RecommendIstio(obs, cfg, prefix)
	if err != nil {
		logL7Proof(g, err, "generated AuthorizationPolicies disagree with observed requests")
		return err
	}
	if err := rec.WriteDir(out, prefix); err != nil {
		return err
	}
	for _, d := range rec.UnknownDetectors {
		g.log.Warn("findings of a detector without an Istio hold-back rule held nothing back", "detector", d)
	}
	if output.value != "table" {
		sum := istioSummary{Out: out, Policies: len(rec.Policies), Requests: rec.Requests, Skipped: rec.Skipped,
			HeldBack: istioHeldEdges(rec.HeldBack), NotHeld: istioHeldEdges(rec.NotHeld), StrictReady: []string{}, StrictBlocked: map[string][]string{}}
		if sum.Skipped == nil {
			sum.Skipped = []string{}
		}
		for _, r := range rec.Readiness {
			if r.Ready() {
				sum.StrictReady = append(sum.StrictReady, r.Namespace)
			} else {
				sum.StrictBlocked[r.Namespace] = r.PlaintextCallers()
			}
		}
		return output.print(w, sum, nil)
	}
	fmt.Fprintf(w, "%d AuthorizationPolicies (ALLOW) from %d distinct inbound requests written to %s (every observed request allowed but those held back; unobserved methods, paths, callers and ports denied)\n",
		len(rec.Policies), rec.Requests, out)
	for _, s := range rec.Skipped {
		fmt.Fprintf(w, "  no AuthorizationPolicy for %s: its pods' stable labels are unknown (an empty selector would cover the whole namespace)\n", s)
	}
	for _, r := range rec.Readiness {
		if r.Ready() {
			fmt.Fprintf(w, "  mTLS STRICT ready: %s (%d requests, all mutual TLS but those held back): PeerAuthentication written\n", r.Namespace, r.MTLS)
			continue
		}
		fmt.Fprintf(w, "  mTLS STRICT would break %s: plaintext callers %s; no PeerAuthentication written\n", r.Namespace, strings.Join(r.PlaintextCallers(), ", "))
	}
	if len(rec.HeldBack) > 0 {
		fmt.Fprintf(w, "%d requests held back as evidence of the detectors' findings (denied; --allow-flagged allows them):\n", len(rec.HeldBack))
		for _, h := range rec.HeldBack {
			for _, f := range h.Flags {
				fmt.Fprintf(w, "  held back: %s (%d requests): evidence of %s\n", h.Request, h.Count, f)
			}
		}
	}
	for _, h := range rec.NotHeld {
		for _, f := range h.Flags {
			fmt.Fprintf(w, "  warning: not held back: %s (%d requests), evidence of %s: its workload has no AuthorizationPolicy, or its source asks the same as callers that stay allowed\n", h.Request, h.Count, f)
		}
	}
	return nil
}

// istioSummary is what recommend --flavor istio -o json|yaml prints.
type istioSummary struct {
	Out      string   `json:"out"`
	Policies int      `json:"policies"`
	Requests int      `json:"requests"`
	Skipped  []string `json:"skipped_workloads"`
	// HeldBack are the requests held back (denied) as evidence of
	// findings; NotHeld those the policies could not deny.
	HeldBack      []leftOutEdge       `json:"held_back"`
	NotHeld       []leftOutEdge       `json:"not_held_back"`
	StrictReady   []string            `json:"mtls_strict_ready"`
	StrictBlocked map[string][]string `json:"mtls_strict_blocked"`
}

func istioHeldEdges(hs []enforcer.IstioHeldBack) []leftOutEdge {
	out := []leftOutEdge{}
	for _, h := range hs {
		tls := "plaintext"
		if h.Request.MTLS {
			tls = "mTLS"
		}
		out = append(out, leftOutEdge{From: h.Request.Caller, To: h.Request.Workload, Port: fmt.Sprintf("TCP/%d", h.Request.Port),
			Request: h.Request.Method + " " + h.Request.Path + " (" + tls + ")", Flows: h.Count, Reason: enforcer.IstioHeldBackReason(h.Flags), Findings: h.Flags})
	}
	return out
}

// verifyL7 judges the observed HTTP requests by the layer-7 policies in
// force (Istio AuthorizationPolicies, Cilium HTTP rules: loadPolicySet),
// if any, printing each request they would deny and a summary on w; v's
// verdict counts them.
func verifyL7(ctx context.Context, g *globals, src *flowSource, w io.Writer, set *enforcer.L7Policies, v *enforcer.Verification) error {
	for _, u := range set.Unsupported {
		fmt.Fprintf(w, "layer 7: not judged: %s\n", u)
	}
	if set.Empty() {
		return nil
	}
	v.SetL7(set)
	err := src.eachFull(ctx, g, func(f *schema.Flow) {
		if r, denied := v.JudgeRequest(f); denied {
			fmt.Fprintf(w, "L7 denied: %s %s → %s %s/%d %s %s: %s\n", r.Time.UTC().Format(time.RFC3339),
				r.Source, r.Dest, r.Protocol, r.Port, r.Method, r.Path, r.Reason)
		}
	})
	if err != nil {
		return err
	}
	verdict := v.Verdict()
	fmt.Fprintf(w, "layer 7: %d Istio AuthorizationPolicies, %d CiliumNetworkPolicies; %d HTTP requests judged, %d would be denied\n",
		len(set.Istio), len(set.Cilium), verdict.L7Judged, verdict.L7Denied)
	return nil
}

// reportL7 writes <out>/l7.md when the policies in force hold layer-7
// policies (loadPolicySet; set is nil without --policies): the requests
// each rule allowed (unused rules are access nobody needed) and the
// requests they would deny.
func reportL7(ctx context.Context, g *globals, src *flowSource, w io.Writer, set *enforcer.L7Policies, out string) error {
	if set == nil || set.Empty() && len(set.Unsupported) == 0 {
		return nil
	}
	u := enforcer.NewL7Usage(set)
	if err := src.eachFull(ctx, g, u.Add); err != nil {
		return err
	}
	var md strings.Builder
	if err := u.WriteMarkdown(&md); err != nil {
		return err
	}
	path := filepath.Join(out, "l7.md")
	if err := os.WriteFile(path, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "layer 7: %d HTTP requests judged, %d would be denied, %d rules unused: %s\n", u.Judged, u.Denied, len(u.Unused()), path)
	return nil
}
