package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/policy"

	"github.com/google/go-cmp/cmp"

	"github.com/flowwarden/flowwarden/ingest/hubble"
)

// TestShardedStatefulSet renders deploy/sharded: serve's Deployment is
// replaced by a StatefulSet whose pods take the shard of their ordinal, N
// copied from spec.replicas, each with a volume of its own for its spool.
func TestShardedStatefulSet(t *testing.T) {
	docs := renderSharded(t)
	var sets []*appsv1.StatefulSet
	services := map[string]*corev1.Service{}
	for _, doc := range docs {
		switch o := strict(t, doc).(type) {
		case *appsv1.Deployment:
			t.Errorf("deploy/sharded still renders Deployment %s", o.Name)
		case *appsv1.StatefulSet:
			sets = append(sets, o)
		case *corev1.Service:
			services[o.Name] = o
		}
	}
	if len(sets) != 1 {
		t.Fatalf("deploy/sharded renders %d StatefulSets, want 1", len(sets))
	}
	ss := sets[0]
	n := int(*ss.Spec.Replicas)
	if n < 2 {
		t.Fatalf("replicas %d: a sharded serve has at least 2", n)
	}
	gov := services[ss.Spec.ServiceName]
	if gov == nil || gov.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("serviceName %q is not a headless Service of the rendering", ss.Spec.ServiceName)
	}
	var c *corev1.Container
	for i := range ss.Spec.Template.Spec.Containers {
		if ss.Spec.Template.Spec.Containers[i].Name == "flowwarden" {
			c = &ss.Spec.Template.Spec.Containers[i]
		}
	}
	if c == nil || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatal("no serve container")
	}
	version, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ghcr.io/flowwarden/flowwarden:" + strings.TrimSpace(string(version)); c.Image != want {
		t.Errorf("the StatefulSet runs %s, want %s", c.Image, want)
	}
	// POD_NAME comes first (Kubernetes expands $(VAR) only from earlier
	// variables), then FLOWWARDEN_SHARD = "$(POD_NAME)/N".
	podName, shard := -1, -1
	for i, e := range c.Env {
		switch e.Name {
		case "POD_NAME":
			podName = i
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("POD_NAME is not the pod's name: %+v", e)
			}
		case "FLOWWARDEN_SHARD":
			shard = i
			if want := fmt.Sprintf("$(POD_NAME)/%d", n); e.Value != want {
				t.Errorf("FLOWWARDEN_SHARD = %q, want %q (N from spec.replicas)", e.Value, want)
			}
		}
	}
	if podName < 0 || shard < podName {
		t.Fatalf("env: POD_NAME at %d, FLOWWARDEN_SHARD at %d; want both, POD_NAME first", podName, shard)
	}
	// What each pod's serve reads: pod i of N takes shard i of N.
	for i := range n {
		value := strings.ReplaceAll(c.Env[shard].Value, "$(POD_NAME)", fmt.Sprintf("%s-%d", ss.Name, i))
		got, err := hubble.ParseShard(value)
		if err != nil || got != (hubble.Shard{Index: i, Count: n}) {
			t.Errorf("pod %d: FLOWWARDEN_SHARD %q reads as %v, %v", i, value, got, err)
		}
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--shard") {
			t.Errorf("arg %q: the shard comes from FLOWWARDEN_SHARD only", a)
		}
	}
	claims := map[string]bool{}
	for _, pvc := range ss.Spec.VolumeClaimTemplates {
		claims[pvc.Name] = true
	}
	for _, v := range ss.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			t.Error("volume data is shared by the pod template: each shard needs its own spool (volumeClaimTemplates)")
		}
	}
	if !claims["data"] {
		t.Error("no volume claim template data for the spool")
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkPodSecurity(t, evaluator, docs, "deploy/sharded"); got != 1 {
		t.Errorf("%d workloads checked in deploy/sharded, want the StatefulSet", got)
	}
	// The README documents the overlay.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "deploy/sharded") {
		t.Error("the README does not mention deploy/sharded")
	}
}

// renderSharded renders a user's kustomization of the base and the
// deploy/sharded component (outside deploy/: kustomize refuses an overlay
// inside its base).
func renderSharded(t *testing.T) [][]byte {
	t.Helper()
	dir := t.TempDir()
	abs, _ := filepath.Abs(".")
	base, err := filepath.Rel(dir, abs)
	if err != nil {
		t.Fatal(err)
	}
	overlay := "resources: [" + base + "]\ncomponents: [" + filepath.Join(base, "sharded") + "]\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	return render(t, dir)
}

// TestHelmShardsEqualsKustomize: the chart with shards: 3 renders exactly
// the base with the deploy/sharded component.
func TestHelmShardsEqualsKustomize(t *testing.T) {
	want, got := objects(t, renderSharded(t)), objects(t, renderHelm(t, map[string]any{"shards": 3}))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Helm chart with shards: 3 differs from kustomize with deploy/sharded (-kustomize +helm):\n%s", diff)
	}
}
