// Package kubeapi reads the NetworkPolicies in force from the Kubernetes API
// server (client-go), and Cilium's CiliumNetworkPolicies and
// CiliumClusterwideNetworkPolicies where Cilium's CRDs are installed: in a
// pod through its ServiceAccount, elsewhere through the kubeconfig kubectl
// would use. It only lists; nothing is written.
package kubeapi

import (
	"context"
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	networkingclient "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// pageSize is how many policies one list request asks for.
const pageSize = 500

// Config finds the API server: the file named by kubeconfig, else
// $KUBECONFIG or ~/.kube/config, else (in a pod) the ServiceAccount's
// in-cluster configuration.
func Config(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes API: no configuration (in a pod: the ServiceAccount token; elsewhere: $KUBECONFIG or ~/.kube/config): %w", err)
	}
	cfg.UserAgent = "flowwarden"
	return cfg, nil
}

// ListPolicies lists the NetworkPolicies of every namespace, page by page.
func ListPolicies(ctx context.Context, cfg *rest.Config) ([]networkingv1.NetworkPolicy, error) {
	client, err := networkingclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s: %w", cfg.Host, err)
	}
	var out []networkingv1.NetworkPolicy
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := client.NetworkPolicies(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list NetworkPolicies from %s: %w", cfg.Host, err)
		}
		out = append(out, page.Items...)
		if page.Continue == "" {
			return out, nil
		}
		opts.Continue = page.Continue
	}
}
