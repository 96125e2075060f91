package deploy

import (
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestImagesArePinnedToTheRelease: every container deploy/ runs is the
// image the Dockerfile builds, at the tag of this tree's VERSION (never
// :latest), as kustomize's images field sets it.
func TestImagesArePinnedToTheRelease(t *testing.T) {
	raw, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	want := "ghcr.io/flowwarden/flowwarden:" + strings.TrimSpace(string(raw))
	n := 0
	for _, dir := range []string{".", "node"} {
		for _, doc := range render(t, dir) {
			var spec *corev1.PodSpec
			switch o := strict(t, doc).(type) {
			case *appsv1.Deployment:
				spec = &o.Spec.Template.Spec
			case *appsv1.DaemonSet:
				spec = &o.Spec.Template.Spec
			default:
				continue
			}
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				n++
				if c.Image != want {
					t.Errorf("deploy/%s: container %s runs %s, want %s", dir, c.Name, c.Image, want)
				}
			}
		}
	}
	if n != 2 {
		t.Errorf("%d containers checked, want serve's and the node agent's", n)
	}
	// The Helm chart's default tag is its appVersion: the same release.
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	raw, err = os.ReadFile("helm/flowwarden/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &chart); err != nil || chart.AppVersion != strings.TrimSpace(strings.TrimPrefix(want, "ghcr.io/flowwarden/flowwarden:")) {
		t.Errorf("the Helm chart's appVersion is %q (%v), want the VERSION file's", chart.AppVersion, err)
	}
}
