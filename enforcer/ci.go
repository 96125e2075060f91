package enforcer

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flowwarden/flowwarden/schema"
)

// PolicySource is where a policy was read from, for CI annotations.
type PolicySource struct {
	File string
	// Line is the line of the policy's metadata name; IngressLine and
	// EgressLine those of its spec.ingress and spec.egress (0: absent).
	Line, IngressLine, EgressLine int
}

// RuleLine is the line to point at for a denial on side ("ingress" or
// "egress"): the rules of that side, else the policy itself.
func (s PolicySource) RuleLine(side string) int {
	switch {
	case side == "ingress" && s.IngressLine > 0:
		return s.IngressLine
	case side == "egress" && s.EgressLine > 0:
		return s.EgressLine
	}
	return s.Line
}

var (
	nameLine    = regexp.MustCompile(`^\s+name:`)
	ingressLine = regexp.MustCompile(`^\s+ingress:`)
	egressLine  = regexp.MustCompile(`^\s+egress:`)
)

// LoadDirSources maps every NetworkPolicy and CiliumNetworkPolicy under dir
// ("namespace/name"; a clusterwide policy by its name) to the file and
// lines it was read from, as LoadDir and LoadCiliumDir read them.
func LoadDirSources(dir string) (map[string]PolicySource, error) {
	out := map[string]PolicySource{}
	err := eachYAMLFile(dir, func(path string, raw []byte) error {
		// Documents with the line each starts on.
		var docs [][]string
		var starts []int
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 16<<20)
		n := 0
		cur := []string{}
		start := 1
		for sc.Scan() {
			n++
			l := sc.Text()
			if strings.HasPrefix(l, "---") {
				docs, starts = append(docs, cur), append(starts, start)
				cur, start = nil, n+1
				continue
			}
			cur = append(cur, l)
		}
		docs, starts = append(docs, cur), append(starts, start)
		for i, doc := range docs {
			text := []byte(strings.Join(doc, "\n"))
			nps, err := ParsePolicies(text)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			cps, err := ParseCiliumPolicies(text)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			type named struct{ key, name string }
			var policies []named
			for _, np := range nps {
				policies = append(policies, named{np.Namespace + "/" + np.Name, np.Name})
			}
			for _, cp := range cps {
				policies = append(policies, named{cp.Key(), cp.Name})
			}
			for _, np := range policies {
				src := PolicySource{File: path, Line: starts[i]}
				for j, l := range doc {
					switch {
					case src.Line == starts[i] && nameLine.MatchString(l) && strings.Contains(l, np.name):
						src.Line = starts[i] + j
					case src.IngressLine == 0 && ingressLine.MatchString(l):
						src.IngressLine = starts[i] + j
					case src.EgressLine == 0 && egressLine.MatchString(l):
						src.EgressLine = starts[i] + j
					}
				}
				out[np.key] = src
			}
		}
		return nil
	})
	return out, err
}

// VerifyEdge is the verdict on one observed edge: all its flows judged.
type VerifyEdge struct {
	Edge     string
	Flows    uint64
	Denied   uint64
	Decision Decision // the first denial (or the allowing decision)
	// Intended is the reason recommend left the edge out on purpose.
	Intended string
	// Regression: forwarded when observed, denied by the policies, and not
	// left out on purpose.
	Regression bool
}

// VerifyReport collects verify's judgements per observed edge and renders
// them for CI: GitHub workflow annotations on the policy file and rule
// that deny, and JUnit XML with one test case per edge.
type VerifyReport struct {
	sources  map[string]PolicySource
	specific map[string]bool // policies whose podSelector selects particular pods
	edges    map[string]*VerifyEdge
}

// NewVerifyReport starts a report on the policies being verified; sources
// (from LoadDirSources, or nil for policies read from the cluster) place
// annotations.
func NewVerifyReport(policies []networkingv1.NetworkPolicy, sources map[string]PolicySource) *VerifyReport {
	r := &VerifyReport{sources: sources, specific: map[string]bool{}, edges: map[string]*VerifyEdge{}}
	for _, np := range policies {
		sel := np.Spec.PodSelector
		r.specific[np.Namespace+"/"+np.Name] = len(sel.MatchLabels)+len(sel.MatchExpressions) > 0
	}
	return r
}

// Add records the judgement d of flow f; intended is the left-out reason
// for its edge, if any.
func (r *VerifyReport) Add(f *schema.Flow, d Decision, intended string) {
	key := ""
	if e, why := EdgeOf(f); why == "" {
		key = EdgeKey(e)
	} else {
		key = fmt.Sprintf("%s → %s %s/%d", flowEnd(&f.Src, f.SrcIP.Unmap().String()), flowEnd(&f.Dst, f.DstIP.Unmap().String()), f.Protocol, f.DstPort)
	}
	ve := r.edges[key]
	if ve == nil {
		ve = &VerifyEdge{Edge: key, Decision: d}
		r.edges[key] = ve
	}
	ve.Flows++
	if d.Allowed {
		return
	}
	if ve.Denied == 0 {
		ve.Decision = d
	}
	ve.Denied++
	switch {
	case intended != "":
		ve.Intended = intended
	case Counts(f):
		ve.Regression = true
	}
}

func flowEnd(e *schema.Endpoint, ip string) string {
	if isWorkload(e) {
		return e.Namespace + "/" + e.Workload
	}
	return ip
}

// Edges returns the judged edges in a stable order.
func (r *VerifyReport) Edges() []VerifyEdge {
	var out []VerifyEdge
	for _, k := range sortedKeys(r.edges) {
		out = append(out, *r.edges[k])
	}
	return out
}

// Regressions counts the edges that lose access.
func (r *VerifyReport) Regressions() int {
	n := 0
	for _, e := range r.edges {
		if e.Regression {
			n++
		}
	}
	return n
}

// blame is the policy to point at for a denial: of those isolating the
// pod, one that selects it specifically (a non-empty podSelector) before a
// namespace-wide default deny.
func (r *VerifyReport) blame(d Decision) string {
	if len(d.Isolated) == 0 {
		return ""
	}
	for _, p := range d.Isolated {
		if r.specific[p] {
			return p
		}
	}
	return d.Isolated[0]
}

func (r *VerifyReport) message(e *VerifyEdge) string {
	return fmt.Sprintf("observed traffic %s (%d flows) would be denied: %s", e.Edge, e.Denied, e.Decision.Reason)
}

// WriteGitHub writes one GitHub Actions error annotation per edge that
// would lose access, on the file and the rules of the policy that denies
// it.
func (r *VerifyReport) WriteGitHub(w io.Writer) error {
	for _, e := range r.Edges() {
		if !e.Regression {
			continue
		}
		p := r.blame(e.Decision)
		props := []string{"title=" + ghProperty("flowwarden verify: "+e.Edge+" loses access")}
		if src, ok := r.sources[p]; ok {
			props = append([]string{"file=" + ghProperty(filepath.ToSlash(src.File)), fmt.Sprintf("line=%d", src.RuleLine(e.Decision.Side))}, props...)
		}
		msg := r.message(&e)
		if p != "" {
			msg += fmt.Sprintf("; no %s rule of %s allows it", e.Decision.Side, p)
		}
		if _, err := fmt.Fprintf(w, "::error %s::%s\n", strings.Join(props, ","), ghData(msg)); err != nil {
			return err
		}
	}
	return nil
}

func ghData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func ghProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes JUnit XML: one test case per observed edge, failing
// when it would lose access, skipped when it was left out on purpose.
func (r *VerifyReport) WriteJUnit(w io.Writer) error {
	s := junitSuite{Name: "flowwarden verify"}
	for _, e := range r.Edges() {
		c := junitCase{Name: e.Edge, Classname: "flowwarden.verify"}
		if ns, _, ok := strings.Cut(e.Edge, "/"); ok && !strings.ContainsAny(ns, " .:") {
			c.Classname += "." + ns
		}
		switch {
		case e.Regression:
			p := r.blame(e.Decision)
			text := r.message(&e)
			if src, ok := r.sources[p]; ok {
				c.File = filepath.ToSlash(src.File)
				text += fmt.Sprintf("\n%s:%d: no %s rule of %s allows it", c.File, src.RuleLine(e.Decision.Side), e.Decision.Side, p)
			}
			c.Failure = &junitMessage{Message: "observed traffic would be denied", Type: "denied", Text: text}
			s.Failures++
		case e.Intended != "":
			c.Skipped = &junitMessage{Message: "left out on purpose: " + e.Intended}
			s.Skipped++
		}
		s.Cases = append(s.Cases, c)
	}
	s.Tests = len(s.Cases)
	sort.SliceStable(s.Cases, func(i, j int) bool { return (s.Cases[i].Failure != nil) && (s.Cases[j].Failure == nil) })
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return fmt.Errorf("junit: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}
