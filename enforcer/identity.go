package enforcer

import (
	"sort"
	"strings"

	"github.com/flowwarden/flowwarden/schema"
)

// Workload is a workload's identity: its namespace and the stable labels of
// its pods (the labels a policy's podSelector uses).
type Workload struct {
	Namespace string
	Name      string
	Labels    map[string]string
}

// Key is "namespace/name".
func (w Workload) Key() string { return w.Namespace + "/" + w.Name }

// churnLabels change from pod to pod or rollout to rollout: never select on them.
var churnLabels = map[string]bool{
	"pod-template-hash":                   true,
	"controller-revision-hash":            true,
	"pod-template-generation":             true,
	"statefulset.kubernetes.io/pod-name":  true,
	"apps.kubernetes.io/pod-index":        true,
	"job-name":                            true,
	"controller-uid":                      true,
	"io.kubernetes.pod.namespace":         true,
	"security.istio.io/tlsMode":           true,
	"service.istio.io/canonical-revision": true,
}

// preferredLabels alone usually identify a workload; when one of them does
// among the namespace's observed workloads, it is the whole selector.
var preferredLabels = []string{"app.kubernetes.io/name", "app", "k8s-app", "name"}

const nsLabelMirror = "io.cilium.k8s.namespace.labels."

// StableLabels keeps the labels of an endpoint that identify its workload:
// Cilium's own and namespace mirrors, reserved/cidr labels and churn labels
// are dropped.
func StableLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		switch {
		case churnLabels[k], strings.HasPrefix(k, "io.cilium."), strings.HasPrefix(k, "batch.kubernetes.io/"),
			strings.HasPrefix(k, "reserved:"), strings.HasPrefix(k, "cidr:"), strings.HasPrefix(k, "fqdn:"),
			strings.HasPrefix(k, "io.kubernetes."), strings.Contains(k, ":"):
			continue
		}
		out[k] = v
	}
	return out
}

// NamespaceLabels extracts the namespace's labels that Cilium mirrors onto
// every endpoint (io.cilium.k8s.namespace.labels.*).
func NamespaceLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if strings.HasPrefix(k, nsLabelMirror) {
			out[k[len(nsLabelMirror):]] = v
		}
	}
	return out
}

func isWorkload(e *schema.Endpoint) bool {
	return e.Namespace != "" && e.WorkloadKind != schema.KindReserved && e.Workload != ""
}

// WorkloadOf is the identity of a flow endpoint that is a pod.
func WorkloadOf(e *schema.Endpoint) (Workload, bool) {
	if !isWorkload(e) {
		return Workload{}, false
	}
	return Workload{Namespace: e.Namespace, Name: e.Workload, Labels: StableLabels(e.Labels)}, true
}

// selectors chooses, for every workload of a namespace, the labels its
// podSelector uses: a single preferred label when it tells the workload
// apart from every other observed workload there, else all stable labels.
func selectors(workloads []Workload) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, w := range workloads {
		chosen := w.Labels
		for _, k := range preferredLabels {
			v, ok := w.Labels[k]
			if !ok {
				continue
			}
			unique := true
			for _, o := range workloads {
				if o.Key() != w.Key() && o.Labels[k] == v {
					unique = false
					break
				}
			}
			if unique {
				chosen = map[string]string{k: v}
				break
			}
		}
		out[w.Key()] = chosen
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
