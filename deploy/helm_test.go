package deploy

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// renderHelm renders deploy/helm/flowwarden with Helm's own loader and
// template engine (what `helm template` / `helm install` run) into the
// release namespace "flowwarden", with vals over the chart's values.yaml.
func renderHelm(t *testing.T, vals map[string]any) [][]byte {
	t.Helper()
	chrt, err := loader.Load("helm/flowwarden")
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	if err := chrt.Validate(); err != nil {
		t.Fatalf("chart: %v", err)
	}
	rv, err := chartutil.ToRenderValues(chrt, vals,
		chartutil.ReleaseOptions{Name: "flowwarden", Namespace: "flowwarden", IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		t.Fatalf("helm render: %v", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var docs [][]byte
	for _, name := range names {
		if path.Ext(name) != ".yaml" {
			continue // _helpers.tpl, NOTES.txt
		}
		for _, d := range splitYAML(t, []byte(files[name])) {
			var probe map[string]any
			if err := yaml.Unmarshal(d, &probe); err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", name, err, files[name])
			}
			if len(probe) > 0 {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

// objects keys each rendered object by kind/namespace/name, as generic
// JSON-shaped maps (every document is also checked strictly against its
// API type).
func objects(t *testing.T, docs [][]byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, d := range docs {
		strict(t, d)
		var o map[string]any
		if err := yaml.Unmarshal(d, &o); err != nil {
			t.Fatal(err)
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%v/%v", o["kind"], md["namespace"], md["name"])
		if _, dup := out[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		out[key] = o
	}
	return out
}

// TestHelmChartEqualsKustomize: with its default values, the chart renders
// exactly the objects `kubectl apply -k deploy/` applies (every field, as
// API objects), and with nodeAgent.enabled also deploy/node/'s.
func TestHelmChartEqualsKustomize(t *testing.T) {
	for _, c := range []struct {
		name string
		vals map[string]any
		dirs []string
	}{
		{"defaults", nil, []string{"."}},
		{"node agent", map[string]any{"nodeAgent": map[string]any{"enabled": true}}, []string{".", "node"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var kdocs [][]byte
			for _, d := range c.dirs {
				kdocs = append(kdocs, render(t, d)...)
			}
			want, got := objects(t, kdocs), objects(t, renderHelm(t, c.vals))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Helm chart differs from kustomize %v (-kustomize +helm):\n%s", c.dirs, diff)
			}
			if len(got) < 11 {
				t.Errorf("only %d objects rendered", len(got))
			}
		})
	}
}

// TestHelmChartPassesTheDeployChecks runs the kustomizations' Pod Security
// and selector checks on the chart's output, with its values changed the
// way an installation would (another namespace, the node agent, a DSN, a
// sharded ClickHouse, no Alertmanager, a tag), and checks that each value
// lands where it should.
func TestHelmChartPassesTheDeployChecks(t *testing.T) {
	vals := map[string]any{
		"image":        map[string]any{"tag": "1.2.3"},
		"nodeAgent":    map[string]any{"enabled": true},
		"alertmanager": map[string]any{"url": ""},
		"clickhouse": map[string]any{
			"dsn":     "clickhouse://flowwarden:secret@clickhouse.clickhouse:9000/flowwarden",
			"cluster": "flows",
		},
	}
	docs := renderHelm(t, vals)
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := checkPodSecurity(t, evaluator, docs, "the Helm chart"); n != 2 {
		t.Errorf("%d workloads checked, want serve's Deployment and the node DaemonSet", n)
	}
	checkServeRestricted(t, evaluator, docs)
	checkSelectorsConnect(t, docs)

	secrets := map[string]string{}
	var images, serveArgs, nodeArgs []string
	var serveNP *networkingv1.NetworkPolicy
	for _, d := range docs {
		switch o := strict(t, d).(type) {
		case *corev1.Secret:
			secrets[o.Namespace] = o.StringData["dsn"]
		case *appsv1.Deployment:
			images = append(images, o.Spec.Template.Spec.Containers[0].Image)
			serveArgs = o.Spec.Template.Spec.Containers[0].Args
		case *appsv1.DaemonSet:
			images = append(images, o.Spec.Template.Spec.Containers[0].Image)
			nodeArgs = o.Spec.Template.Spec.Containers[0].Args
		case *networkingv1.NetworkPolicy:
			if o.Name == "flowwarden-serve" {
				serveNP = o
			}
		}
	}
	dsn := vals["clickhouse"].(map[string]any)["dsn"]
	if secrets["flowwarden"] != dsn || secrets["flowwarden-node"] != dsn {
		t.Errorf("the DSN Secret is not in both namespaces: %v", secrets)
	}
	if fmt.Sprint(images) != "[ghcr.io/flowwarden/flowwarden:1.2.3 ghcr.io/flowwarden/flowwarden:1.2.3]" {
		t.Errorf("images %v, want the tag 1.2.3", images)
	}
	for _, args := range [][]string{serveArgs, nodeArgs} {
		if !slices.Contains(args, "--clickhouse-cluster=flows") || !slices.Contains(args, "--clickhouse-replicated=true") {
			t.Errorf("args %v lack the sharded ClickHouse flags", args)
		}
	}
	for _, a := range serveArgs {
		if strings.HasPrefix(a, "--alertmanager") {
			t.Errorf("alertmanager.url empty but serve has %s", a)
		}
	}
	if serveNP == nil || len(serveNP.Spec.Egress) != 2 {
		t.Errorf("without Alertmanager, serve's policy should allow Relay and ClickHouse only: %+v", serveNP)
	}
}
