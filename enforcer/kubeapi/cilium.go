package kubeapi

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/flowwarden/flowwarden/enforcer"
)

// The Cilium policy resources listed from the cluster (Cilium's CRDs,
// cilium.io/v2): CiliumNetworkPolicies of every namespace and the
// CiliumClusterwideNetworkPolicies.
var (
	CiliumNetworkPolicies            = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	CiliumClusterwideNetworkPolicies = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}
)

// CiliumRBACRule is the read-only RBAC rule listing the Cilium policies
// needs (deploy/rbac.yaml and the Helm chart's ClusterRole hold it).
const CiliumRBACRule = `{apiGroups: ["cilium.io"], resources: ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"], verbs: ["list"]}`

// ListCiliumPolicies lists the CiliumNetworkPolicies of every namespace and
// the CiliumClusterwideNetworkPolicies, page by page, sorted by Key as
// enforcer.LoadCiliumDir sorts them. A kind whose CRD is not installed
// (the API server has no such resource: not a Cilium cluster) is no error:
// its resource is named in missing. A forbidden list is an error naming
// the RBAC rule that is missing. Each policy is read as
// enforcer.ParseCiliumPolicies reads a file: a field the Cilium rule type
// does not know is an error naming the policy.
func ListCiliumPolicies(ctx context.Context, client dynamic.Interface) (policies []enforcer.CiliumNetworkPolicy, missing []string, err error) {
	return ListCiliumPoliciesL7(ctx, client, nil)
}

// ListCiliumPoliciesL7 is ListCiliumPolicies that also reads each listed
// policy into l7 (when not nil) as enforcer.LoadL7Dir reads a file: the
// HTTP rules of the CiliumNetworkPolicies, judged at layer 7. The same
// listing serves both: no second request.
func ListCiliumPoliciesL7(ctx context.Context, client dynamic.Interface, l7 *enforcer.L7Policies) (policies []enforcer.CiliumNetworkPolicy, missing []string, err error) {
	for _, r := range []struct {
		gvr  schema.GroupVersionResource
		kind string
	}{
		{CiliumNetworkPolicies, "CiliumNetworkPolicy"},
		{CiliumClusterwideNetworkPolicies, "CiliumClusterwideNetworkPolicy"},
	} {
		listed, err := listCilium(ctx, client, r.gvr, r.kind, l7)
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, r.gvr.GroupResource().String())
			continue
		case apierrors.IsForbidden(err):
			return nil, nil, fmt.Errorf("list %s: forbidden: the user (in a pod: its ServiceAccount) needs the read-only RBAC rule %s in a ClusterRole (deploy/rbac.yaml): %w",
				r.gvr.GroupResource(), CiliumRBACRule, err)
		case err != nil:
			return nil, nil, err
		}
		policies = append(policies, listed...)
	}
	sort.SliceStable(policies, func(i, j int) bool { return policies[i].Key() < policies[j].Key() })
	return policies, missing, nil
}

// listCilium lists one Cilium policy resource, page by page; an API error
// comes back unwrapped, for the caller to tell NotFound and Forbidden.
func listCilium(ctx context.Context, client dynamic.Interface, gvr schema.GroupVersionResource, kind string, l7 *enforcer.L7Policies) ([]enforcer.CiliumNetworkPolicy, error) {
	var out []enforcer.CiliumNetworkPolicy
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := client.Resource(gvr).Namespace(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				return nil, err
			}
			return nil, fmt.Errorf("list %s: %w", gvr.GroupResource(), err)
		}
		for i := range page.Items {
			item := &page.Items[i]
			// The list's items may leave the kind out; the parser reads it.
			item.SetAPIVersion(gvr.GroupVersion().String())
			item.SetKind(kind)
			raw, err := item.MarshalJSON()
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", kind, name(item.GetNamespace(), item.GetName()), err)
			}
			cps, err := enforcer.ParseCiliumPolicies(raw)
			if err != nil {
				return nil, fmt.Errorf("%s %s from the cluster: %w", kind, name(item.GetNamespace(), item.GetName()), err)
			}
			out = append(out, cps...)
			if l7 != nil {
				if err := addL7(item, gvr, kind, l7); err != nil {
					return nil, err
				}
			}
		}
		if page.GetContinue() == "" {
			return out, nil
		}
		opts.Continue = page.GetContinue()
	}
}

func name(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
