package kubeapi

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/flowwarden/flowwarden/enforcer"
)

// AuthorizationPolicies is Istio's AuthorizationPolicy resource
// (security.istio.io/v1), listed across namespaces.
var AuthorizationPolicies = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}

// IstioRBACRule is the read-only RBAC rule listing the AuthorizationPolicies
// needs (deploy/rbac.yaml and the Helm chart's ClusterRole hold it).
const IstioRBACRule = `{apiGroups: ["security.istio.io"], resources: ["authorizationpolicies"], verbs: ["list"]}`

// ListAuthorizationPolicies adds the AuthorizationPolicies of every
// namespace to into, page by page, sorted by namespace/name, each read by
// enforcer.ParseL7Policies as enforcer.LoadL7Dir reads a file (what it
// does not judge goes to into.Unsupported, named). missing is true when
// the API server has no such resource (Istio's CRDs are not installed): no
// error. A forbidden list is an error naming the RBAC rule that is missing.
func ListAuthorizationPolicies(ctx context.Context, client dynamic.Interface, into *enforcer.L7Policies) (missing bool, err error) {
	var items []unstructured.Unstructured
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := client.Resource(AuthorizationPolicies).Namespace(metav1.NamespaceAll).List(ctx, opts)
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case apierrors.IsForbidden(err):
			return false, fmt.Errorf("list %s: forbidden: the user (in a pod: its ServiceAccount) needs the read-only RBAC rule %s in a ClusterRole (deploy/rbac.yaml): %w",
				AuthorizationPolicies.GroupResource(), IstioRBACRule, err)
		case err != nil:
			return false, fmt.Errorf("list %s: %w", AuthorizationPolicies.GroupResource(), err)
		}
		items = append(items, page.Items...)
		if page.GetContinue() == "" {
			break
		}
		opts.Continue = page.GetContinue()
	}
	sort.SliceStable(items, func(i, j int) bool {
		return name(items[i].GetNamespace(), items[i].GetName()) < name(items[j].GetNamespace(), items[j].GetName())
	})
	for i := range items {
		if err := addL7(&items[i], AuthorizationPolicies, "AuthorizationPolicy", into); err != nil {
			return false, err
		}
	}
	return false, nil
}

// addL7 reads one listed object into the layer-7 policies as
// enforcer.ParseL7Policies reads a document of a file. The status the
// API server (or Istio's status manager) keeps is not part of the policy
// and is dropped; what the parser does not judge is named with the object.
func addL7(item *unstructured.Unstructured, gvr schema.GroupVersionResource, kind string, into *enforcer.L7Policies) error {
	// The list's items may leave the kind out; the parser reads it.
	item.SetAPIVersion(gvr.GroupVersion().String())
	item.SetKind(kind)
	unstructured.RemoveNestedField(item.Object, "status")
	id := kind + " " + name(item.GetNamespace(), item.GetName())
	raw, err := item.MarshalJSON()
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	before := len(into.Unsupported)
	if err := enforcer.ParseL7Policies(raw, into); err != nil {
		return fmt.Errorf("%s from the cluster: %w", id, err)
	}
	for i := before; i < len(into.Unsupported); i++ {
		if !strings.HasPrefix(into.Unsupported[i], id+":") { // the parser may name it already
			into.Unsupported[i] = id + ": " + into.Unsupported[i]
		}
	}
	return nil
}
