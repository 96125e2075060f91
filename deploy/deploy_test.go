// Package deploy holds the Kubernetes manifests; this test proves they are
// valid API objects and that the kustomizations render.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	policytypes "github.com/cilium/cilium/pkg/policy/types"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	amconfig "github.com/prometheus/alertmanager/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flowwarden/flowwarden/enforcer"
	"github.com/flowwarden/flowwarden/enforcer/kubeapi"
)

// render runs kustomize on a directory, as `kubectl apply -k` would.
func render(t *testing.T, dir string) [][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return splitYAML(t, out)
}

// splitYAML splits a multi-document YAML stream as kubectl does
// (apimachinery's reader), dropping empty documents.
func splitYAML(t testing.TB, raw []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("splitting YAML documents: %v", err)
		}
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
}

// strict decodes a manifest into its API type, rejecting unknown fields.
func strict(t *testing.T, doc []byte) any {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatal(err)
	}
	var obj any
	switch head.APIVersion + "/" + head.Kind {
	case "v1/Namespace":
		obj = &corev1.Namespace{}
	case "v1/ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1/Service":
		obj = &corev1.Service{}
	case "v1/Secret":
		obj = &corev1.Secret{}
	case "apps/v1/Deployment":
		obj = &appsv1.Deployment{}
	case "apps/v1/DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "apps/v1/StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		obj = &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		obj = &rbacv1.ClusterRoleBinding{}
	case "networking.k8s.io/v1/NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "cilium.io/v2/CiliumNetworkPolicy":
		obj = &ciliumv2.CiliumNetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		obj = &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PodMonitor":
		obj = &monitoringv1.PodMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		obj = &monitoringv1.PrometheusRule{}
	default:
		t.Fatalf("no API type for %s %s", head.APIVersion, head.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %v\n%s", head.Kind, err, doc)
	}
	return obj
}

// renderedOne is the one object of type T the kustomization in dir renders.
func renderedOne[T any](t *testing.T, dir string) *T {
	t.Helper()
	var found []*T
	for _, doc := range render(t, dir) {
		if o, ok := strict(t, doc).(*T); ok {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("deploy/%s renders %d %T objects, want 1", dir, len(found), zero)
	}
	return found[0]
}

func TestKustomizationRendersValidObjects(t *testing.T) {
	kinds := map[string]int{}
	var deploy *appsv1.Deployment
	var policies []networkingv1.NetworkPolicy
	var apiserverRules api.Rules
	for _, doc := range render(t, ".") {
		switch o := strict(t, doc).(type) {
		case *appsv1.Deployment:
			deploy = o
			kinds["Deployment"]++
		case *rbacv1.ClusterRole:
			checkReadPoliciesRole(t, o)
			kinds["ClusterRole"]++
		case *networkingv1.NetworkPolicy:
			if o.Namespace != "flowwarden" {
				t.Errorf("policy %s not in the flowwarden namespace", o.Name)
			}
			policies = append(policies, *o)
			kinds["NetworkPolicy"]++
		case *ciliumv2.CiliumNetworkPolicy:
			// What the Cilium agent does with it: sanitise and parse.
			rules, err := o.Parse(slog.New(slog.DiscardHandler), "default")
			if err != nil || o.Namespace != "flowwarden" {
				t.Fatalf("CiliumNetworkPolicy %s/%s: %v", o.Namespace, o.Name, err)
			}
			apiserverRules = append(apiserverRules, rules...)
			kinds["CiliumNetworkPolicy"]++
		default:
			kinds[fmt.Sprintf("%T", o)]++
		}
	}
	if deploy == nil || len(policies) != 2 || len(apiserverRules) != 1 || len(kinds) < 9 {
		t.Fatalf("rendered %v", kinds)
	}
	// Pod security: non-root, read-only root filesystem, no capabilities.
	sc := deploy.Spec.Template.Spec.Containers[0].SecurityContext
	psc := deploy.Spec.Template.Spec.SecurityContext
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("serve's security context is not locked down: %+v %+v", psc, sc)
	}
	// Eat our own cooking: judge flowwarden's traffic with its own policies.
	labels := deploy.Spec.Template.Labels
	ev, err := enforcer.NewEvaluator(policies, nil)
	if err != nil {
		t.Fatal(err)
	}
	self := &enforcer.Pod{Namespace: "flowwarden", Name: "flowwarden-0", Labels: labels}
	pod := func(ns string, l map[string]string) enforcer.Endpoint {
		return enforcer.Endpoint{Pod: &enforcer.Pod{Namespace: ns, Name: "x", Labels: l}}
	}
	cases := []struct {
		conn    enforcer.Connection
		allowed bool
	}{
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: pod("kube-system", map[string]string{"k8s-app": "hubble-relay"}), Port: 4245}, true},
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: pod("kube-system", map[string]string{"k8s-app": "kube-dns"}), Port: 53, Protocol: "UDP"}, true},
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: pod("clickhouse", map[string]string{"app.kubernetes.io/name": "clickhouse"}), Port: 9000}, true},
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: pod("monitoring", map[string]string{"app.kubernetes.io/name": "alertmanager"}), Port: 9093}, true},
		{enforcer.Connection{Src: pod("monitoring", map[string]string{"app.kubernetes.io/name": "prometheus"}), Dst: enforcer.Endpoint{Pod: self}, Port: 9965}, true},
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: enforcer.Endpoint{IP: netip.MustParseAddr("169.254.169.254")}, Port: 80}, false},
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: enforcer.Endpoint{IP: netip.MustParseAddr("1.1.1.1")}, Port: 443}, false},
		// The API server is allowed by Cilium's entity rule below, not by an address.
		{enforcer.Connection{Src: enforcer.Endpoint{Pod: self}, Dst: enforcer.Endpoint{IP: netip.MustParseAddr("10.0.0.1")}, Port: 6443}, false},
		{enforcer.Connection{Src: pod("default", map[string]string{"app": "x"}), Dst: enforcer.Endpoint{Pod: self}, Port: 9965}, false},
	}
	for _, c := range cases {
		if d := ev.Evaluate(c.conn); d.Allowed != c.allowed {
			t.Errorf("%s → %s:%d: allowed=%v, want %v (%s)", c.conn.Src, c.conn.Dst, c.conn.Port, d.Allowed, c.allowed, d.Reason)
		}
	}
	checkAPIServerRule(t, apiserverRules[0], labels)
}

// checkReadPoliciesRole: read-only, and only what the code uses: kubeapi
// lists the NetworkPolicies, the two Cilium policy resources and Istio's
// AuthorizationPolicies it names; analyze lists the PeerAuthentications.
func checkReadPoliciesRole(t *testing.T, role *rbacv1.ClusterRole) {
	t.Helper()
	var got []string
	for _, r := range role.Rules {
		got = append(got, fmt.Sprint(r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs))
	}
	cnp, ccnp, authz := kubeapi.CiliumNetworkPolicies, kubeapi.CiliumClusterwideNetworkPolicies, kubeapi.AuthorizationPolicies
	want := []string{
		"[networking.k8s.io] [networkpolicies] [list] [] []",
		fmt.Sprintf("[%s] [%s %s] [list] [] []", cnp.Group, cnp.Resource, ccnp.Resource),
		// PeerAuthentications: analyze.ListPeerAuthentications (plaintext-in-mesh, the report's mTLS coverage).
		fmt.Sprintf("[%s] [%s peerauthentications] [list] [] []", authz.Group, authz.Resource),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || ccnp.Group != cnp.Group {
		t.Errorf("ClusterRole %s grants %q, want exactly listing NetworkPolicies, the Cilium policies and the AuthorizationPolicies %q", role.Name, got, want)
	}
}

// checkAPIServerRule: the Cilium rule selects serve's pods (and no other
// flowwarden pod) and allows them the kube-apiserver entity on the API
// server's ports, and nothing else.
func checkAPIServerRule(t *testing.T, rule *api.Rule, podLabels map[string]string) {
	t.Helper()
	identity := func(l map[string]string) labels.LabelArray {
		arr := labels.LabelArray{labels.NewLabel("io.kubernetes.pod.namespace", "flowwarden", labels.LabelSourceK8s)}
		for k, v := range l {
			arr = append(arr, labels.NewLabel(k, v, labels.LabelSourceK8s))
		}
		return arr.Sort()
	}
	selector := policytypes.NewLabelSelector(rule.EndpointSelector)
	other := map[string]string{}
	for k, v := range podLabels {
		other[k] = v
	}
	other["app.kubernetes.io/component"] = "node"
	if !selector.Matches(identity(podLabels)) || selector.Matches(identity(other)) {
		t.Errorf("the API server rule's selector %s does not select exactly serve's pods %v", rule.EndpointSelector, podLabels)
	}
	if len(rule.Ingress) != 0 || len(rule.Egress) != 1 {
		t.Fatalf("the API server rule allows more than one egress: %+v", rule)
	}
	eg := rule.Egress[0]
	var ports []string
	for _, pr := range eg.ToPorts {
		for _, p := range pr.Ports {
			ports = append(ports, string(p.Protocol)+"/"+p.Port)
		}
	}
	if fmt.Sprint(eg.ToEntities) != "[kube-apiserver]" || len(eg.ToEndpoints) != 0 || len(eg.ToCIDRSet) != 0 ||
		len(eg.ToFQDNs) != 0 || len(eg.ToServices) != 0 || fmt.Sprint(ports) != "[TCP/6443 TCP/443]" {
		t.Errorf("the API server rule allows %v on %v (+endpoints %d, CIDRs %d), want [kube-apiserver] on [TCP/6443 TCP/443] only",
			eg.ToEntities, ports, len(eg.ToEndpoints), len(eg.ToCIDRSet))
	}
}

func TestNodeDaemonSetNeedsOnlyNetAdmin(t *testing.T) {
	ds := renderedOne[appsv1.DaemonSet](t, "node")
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	if !ds.Spec.Template.Spec.HostNetwork || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "NET_ADMIN" ||
		sc.Privileged != nil && *sc.Privileged {
		t.Fatalf("node agent must run on the host network with NET_ADMIN only: %+v", sc)
	}
	// Its data directory is on the node, so the confirmed host firewall
	// (and the spool) outlive a reboot.
	c := ds.Spec.Template.Spec.Containers[0]
	var dataDir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			dataDir = v
		}
	}
	var onNode bool
	for _, m := range c.VolumeMounts {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && m.MountPath == dataDir && v.HostPath != nil && v.HostPath.Path == dataDir {
				onNode = true
			}
		}
	}
	if dataDir == "" || !onNode {
		t.Errorf("--data-dir %q is not a hostPath volume of the same path", dataDir)
	}
}

// The node agent, on the host network, serves no page and listens on its
// node's address only; the PodMonitor scrapes the port it has, and the
// probes reach /readyz and /livez there.
func TestNodeAgentServesMetricsOnlyOnTheNodeAddress(t *testing.T) {
	ds := renderedOne[appsv1.DaemonSet](t, "node")
	pm := renderedOne[monitoringv1.PodMonitor](t, "node")
	c := ds.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--page=false") || !strings.Contains(args, "--listen=$(NODE_IP):9966") {
		t.Errorf("node agent args %q: want --page=false and --listen=$(NODE_IP):9966", args)
	}
	var nodeIP bool
	for _, e := range c.Env {
		if e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP" {
			nodeIP = true
		}
	}
	if !nodeIP {
		t.Error("NODE_IP is not the node's address (status.hostIP)")
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the PodMonitor selects %s=%s, which the node pods lack", k, v)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, e := range pm.Spec.PodMetricsEndpoints {
		if e.Port == nil || ports[*e.Port] != 9966 || e.Path != "/metrics" {
			t.Errorf("the PodMonitor scrapes %v %s, not the container's port 9966 /metrics", e.Port, e.Path)
		}
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/livez" {
		t.Error("the node agent's probes are not /readyz and /livez")
	}
}

func TestKyvernoGeneratesAValidDefaultDeny(t *testing.T) {
	raw, err := os.ReadFile("kyverno/default-deny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Rules []struct {
				Generate struct {
					APIVersion string `json:"apiVersion"`
					Kind       string `json:"kind"`
					Data       struct {
						Spec networkingv1.NetworkPolicySpec `json:"spec"`
					} `json:"data"`
				} `json:"generate"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &cp); err != nil {
		t.Fatal(err)
	}
	if cp.APIVersion != "kyverno.io/v1" || cp.Kind != "ClusterPolicy" || len(cp.Spec.Rules) != 1 || cp.Spec.Rules[0].Generate.Kind != "NetworkPolicy" {
		t.Fatalf("not a Kyverno generate policy: %+v", cp)
	}
	// The generated policy isolates both directions and allows only DNS.
	spec := cp.Spec.Rules[0].Generate.Data.Spec
	np := networkingv1.NetworkPolicy{Spec: spec}
	np.Namespace, np.Name = "tenant", "default-deny"
	ev, _ := enforcer.NewEvaluator([]networkingv1.NetworkPolicy{np}, nil)
	a := &enforcer.Pod{Namespace: "tenant", Name: "a", Labels: map[string]string{"app": "a"}}
	dns := &enforcer.Pod{Namespace: "kube-system", Name: "dns", Labels: map[string]string{"k8s-app": "kube-dns"}}
	if !ev.Evaluate(enforcer.Connection{Src: enforcer.Endpoint{Pod: a}, Dst: enforcer.Endpoint{Pod: dns}, Port: 53, Protocol: "UDP"}).Allowed {
		t.Error("DNS must stay allowed")
	}
	if ev.Evaluate(enforcer.Connection{Src: enforcer.Endpoint{Pod: a}, Dst: enforcer.Endpoint{IP: netip.MustParseAddr("1.1.1.1")}, Port: 443}).Allowed {
		t.Error("egress must be denied")
	}
}

func TestAlertmanagerRouteExample(t *testing.T) {
	raw, err := os.ReadFile("alertmanager/route.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := amconfig.Load(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	// A critical flowwarden alert pages.
	var pager bool
	for _, r := range cfg.Route.Routes {
		for _, m := range r.Matchers {
			if m.Name == "severity" && m.Value == "critical" && strings.Contains(r.Receiver, "pager") {
				pager = true
			}
		}
	}
	if !pager {
		t.Fatal("no route pages on severity=critical")
	}
}

// TestPodSecurityAdmissionAdmitsEveryWorkload runs each workload's pod
// template through the Pod Security Admission checks (the library the API
// server enforces them with) at the level its namespace enforces: a pod the
// admission refuses would leave a Deployment or DaemonSet with no pods.
func TestPodSecurityAdmissionAdmitsEveryWorkload(t *testing.T) {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	workloads := 0
	for _, dir := range []string{".", "node"} {
		workloads += checkPodSecurity(t, evaluator, render(t, dir), "deploy/"+dir)
	}
	if workloads != 2 {
		t.Errorf("%d workloads checked, want serve's Deployment and the node DaemonSet", workloads)
	}
	// serve itself meets "restricted", whatever namespace it is put in.
	checkServeRestricted(t, evaluator, render(t, "."))
}

// checkPodSecurity runs each workload's pod template of one rendering (a
// kustomization or the Helm chart, named by source) through the Pod
// Security Admission checks at the level its rendered namespace enforces,
// and returns how many workloads it checked.
func checkPodSecurity(t *testing.T, evaluator policy.Evaluator, docs [][]byte, source string) int {
	t.Helper()
	workloads := 0
	levels := map[string]psapi.Level{}
	type pod struct {
		kind, name, namespace string
		tmpl                  corev1.PodTemplateSpec
	}
	var pods []pod
	for _, doc := range docs {
		switch o := strict(t, doc).(type) {
		case *corev1.Namespace:
			level, err := psapi.ParseLevel(o.Labels[psapi.EnforceLevelLabel])
			if err != nil {
				t.Fatalf("namespace %s: %v", o.Name, err)
			}
			levels[o.Name] = level
		case *appsv1.Deployment:
			pods = append(pods, pod{"Deployment", o.Name, o.Namespace, o.Spec.Template})
		case *appsv1.DaemonSet:
			pods = append(pods, pod{"DaemonSet", o.Name, o.Namespace, o.Spec.Template})
		case *appsv1.StatefulSet:
			pods = append(pods, pod{"StatefulSet", o.Name, o.Namespace, o.Spec.Template})
		}
	}
	for _, p := range pods {
		workloads++
		level, ok := levels[p.namespace]
		if !ok {
			t.Errorf("%s %s: its namespace %q is not in %s", p.kind, p.name, p.namespace, source)
			continue
		}
		res := policy.AggregateCheckResults(evaluator.EvaluatePod(psapi.LevelVersion{Level: level, Version: psapi.LatestVersion()},
			&p.tmpl.ObjectMeta, &p.tmpl.Spec))
		if !res.Allowed {
			t.Errorf("%s %s in namespace %s (pod security %q) would be refused: %s", p.kind, p.name, p.namespace, level, res.ForbiddenReason())
		}
	}
	return workloads
}

// checkServeRestricted: serve's pods meet "restricted" whatever namespace
// they are put in.
func checkServeRestricted(t *testing.T, evaluator policy.Evaluator, docs [][]byte) {
	t.Helper()
	var d *appsv1.Deployment
	for _, doc := range docs {
		if o, ok := strict(t, doc).(*appsv1.Deployment); ok {
			d = o
		}
	}
	if d == nil {
		t.Fatal("no Deployment rendered")
	}
	res := policy.AggregateCheckResults(evaluator.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()},
		&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec))
	if !res.Allowed {
		t.Errorf("serve is not \"restricted\": %s", res.ForbiddenReason())
	}
}

// TestSelectorsConnect follows the rendered objects' selectors: the
// ServiceMonitor selects the Service and scrapes a port it has, the Service
// selects serve's pods and targets a port they name, the NetworkPolicy for
// serve selects them, and the ClusterRoleBinding names the ServiceAccount
// the pods run as. Each is valid alone; these are what make them work.
func TestSelectorsConnect(t *testing.T) { checkSelectorsConnect(t, render(t, ".")) }

// checkSelectorsConnect follows the selectors of one rendering of serve's
// objects (the kustomization or the Helm chart).
func checkSelectorsConnect(t *testing.T, docs [][]byte) {
	t.Helper()
	var (
		deploy  *appsv1.Deployment
		svc     *corev1.Service
		sm      *monitoringv1.ServiceMonitor
		binding *rbacv1.ClusterRoleBinding
		sas     = map[string]bool{}
		serveNP *networkingv1.NetworkPolicy
	)
	for _, doc := range docs {
		switch o := strict(t, doc).(type) {
		case *appsv1.Deployment:
			deploy = o
		case *corev1.Service:
			svc = o
		case *monitoringv1.ServiceMonitor:
			sm = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		case *corev1.ServiceAccount:
			sas[o.Namespace+"/"+o.Name] = true
		case *networkingv1.NetworkPolicy:
			if o.Name == "flowwarden-serve" {
				serveNP = o
			}
		}
	}
	if deploy == nil || svc == nil || sm == nil || binding == nil || serveNP == nil {
		t.Fatal("missing objects")
	}
	matches := func(sel map[string]string, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	pod := deploy.Spec.Template
	if sm.Namespace != svc.Namespace || !matches(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("the ServiceMonitor %v does not select the Service %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	ports := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = true
	}
	for _, e := range sm.Spec.Endpoints {
		if !ports[e.Port] {
			t.Errorf("the ServiceMonitor scrapes port %q, which the Service lacks", e.Port)
		}
	}
	if svc.Namespace != deploy.Namespace || !matches(svc.Spec.Selector, pod.Labels) || !matches(deploy.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("the Service (%v) or the Deployment (%v) does not select serve's pods %v", svc.Spec.Selector, deploy.Spec.Selector.MatchLabels, pod.Labels)
	}
	named := map[string]int32{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
		}
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := named[p.TargetPort.StrVal]; p.TargetPort.StrVal != "" && !ok {
			t.Errorf("the Service targets port %q, which serve's container does not name", p.TargetPort.StrVal)
		}
	}
	if !matches(serveNP.Spec.PodSelector.MatchLabels, pod.Labels) {
		t.Errorf("NetworkPolicy flowwarden-serve does not select serve's pods")
	}
	if !sas[deploy.Namespace+"/"+pod.Spec.ServiceAccountName] {
		t.Errorf("serve runs as ServiceAccount %q, which is not rendered", pod.Spec.ServiceAccountName)
	}
	bound := false
	for _, s := range binding.Subjects {
		bound = bound || s.Kind == "ServiceAccount" && s.Namespace == deploy.Namespace && s.Name == pod.Spec.ServiceAccountName
	}
	if !bound {
		t.Errorf("the ClusterRoleBinding does not bind serve's ServiceAccount: %+v", binding.Subjects)
	}
	// The probes and the scrape use the port serve listens on.
	for _, a := range pod.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok && !strings.HasSuffix(v, fmt.Sprintf(":%d", named["http-metrics"])) {
			t.Errorf("serve listens on %s but the container's http-metrics port is %d", v, named["http-metrics"])
		}
	}
}
