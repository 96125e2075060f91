package enforcer

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/flowwarden/flowwarden/schema"
)

// The policies below are Cilium's documentation examples (Apache-2.0),
// as published in the Cilium repository under examples/policies/ and
// shown on the pages cited per case; each case states what the page says
// the policy does.
const (
	docLayer3     = "https://docs.cilium.io/en/stable/security/policy/language/#layer-3-examples"
	docLayer4     = "https://docs.cilium.io/en/stable/security/policy/language/#layer-4-examples"
	docDeny       = "https://docs.cilium.io/en/stable/security/policy/language/#deny-policies"
	docKubernetes = "https://docs.cilium.io/en/stable/security/policy/kubernetes/"
	docIntro      = "https://docs.cilium.io/en/stable/security/policy/intro/#policy-enforcement-modes"
)

var ciliumDocPolicies = map[string]string{
	// layer3: Endpoints Based (examples/policies/l3/simple/l3.yaml)
	"l3-rule": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l3-rule"
spec:
  endpointSelector:
    matchLabels:
      role: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        role: frontend
`,
	// layer3: Ingress Allow All (l3/ingress-allow-all)
	"allow-all-to-victim": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "allow-all-to-victim"
spec:
  endpointSelector:
    matchLabels:
      role: victim
  ingress:
  - fromEndpoints:
    - {}
`,
	// layer3: Egress Default Deny (l3/egress-default-deny)
	"deny-all-egress": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "deny-all-egress"
spec:
  endpointSelector:
    matchLabels:
      role: restricted
  egress:
  - {}
`,
	// deny: (l3/egress-deny)
	"deny-egress-example": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "deny-egress-example"
spec:
  endpointSelector:
    matchLabels:
      role: frontend
  egress:
  - toEntities:
    - all
  egressDeny:
  - toEndpoints:
    - matchLabels:
        role: backend
`,
	// layer3: CIDR based (l3/cidr)
	"cidr-rule": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "cidr-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
  - toCIDR:
    - 20.1.1.1/32
  - toCIDRSet:
    - cidr: 10.0.0.0/8
      except:
      - 10.96.0.0/12
`,
	// layer3: Entities based, world (l3/entities/world.yaml)
	"from-world-to-role-public": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "from-world-to-role-public"
spec:
  endpointSelector:
    matchLabels:
      role: public
  ingress:
    - fromEntities:
      - world
`,
	// deny: (l3/entities/from_world_deny.yaml)
	"external-lockdown": `apiVersion: "cilium.io/v2"
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: "external-lockdown"
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEntities:
    - "world"
  ingress:
  - fromEntities:
    - "all"
`,
	// layer3: DNS based (l3/fqdn)
	"to-fqdn": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "to-fqdn"
spec:
  endpointSelector:
    matchLabels:
      app: test-app
  egress:
    - toEndpoints:
      - matchLabels:
          "k8s:io.kubernetes.pod.namespace": kube-system
          "k8s:k8s-app": kube-dns
      toPorts:
        - ports:
           - port: "53"
             protocol: ANY
          rules:
            dns:
              - matchPattern: "*"
    - toFQDNs:
        - matchName: "my-remote-service.com"
`,
	// layer3: DNS based, matchPattern ("*.cilium.io will match
	// sub.cilium.io but not cilium.io or sub.sub.cilium.io")
	"to-fqdn-pattern": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "to-fqdn-pattern"
spec:
  endpointSelector:
    matchLabels:
      app: test-app
  egress:
    - toFQDNs:
        - matchPattern: "*.cilium.io"
`,
	// layer4: Limit ingress/egress ports (l4/l4.yaml)
	"l4-rule": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l4-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
    - toPorts:
      - ports:
        - port: "80"
          protocol: TCP
`,
	// layer4: Labels-dependent Layer 4 rule (l4/l3_l4_combined.yaml)
	"l3-l4-rule": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l4-rule"
spec:
  endpointSelector:
    matchLabels:
      role: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        role: frontend
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
`,
	// layer4: port ranges (l4/l4_port_range.yaml)
	"l4-port-range-rule": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l4-port-range-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
    - toPorts:
      - ports:
        - port: "80"
          endPort: 444
          protocol: TCP
`,
	// kubernetes: Namespaces (kubernetes/namespace/namespace-policy.yaml)
	"k8s-expose-across-namespace": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "k8s-expose-across-namespace"
  namespace: ns1
spec:
  endpointSelector:
    matchLabels:
      name: leia
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: ns2
        name: luke
`,
	// kubernetes: Namespaces, by namespace labels
	// (kubernetes/namespace/namespace-labels-policy.yaml)
	"alliance-only": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "alliance-only"
spec:
  endpointSelector:
    matchLabels:
      name: rebel-base
  ingress:
  - fromEndpoints:
    - matchLabels:
        io.cilium.k8s.namespace.labels.faction: "alliance"
`,
	// layer3: Entities based, kube-apiserver (l3/entities/apiserver.yaml)
	"dev-to-kube-apiserver": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "dev-to-kube-apiserver"
spec:
  endpointSelector:
    matchLabels:
      env: dev
  egress:
    - toEntities:
      - kube-apiserver
`,
	// layer3: Entities based, nodes (l3/entities/nodes.yaml)
	"to-dev-from-nodes-in-cluster": `apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "to-dev-from-nodes-in-cluster"
spec:
  endpointSelector:
    matchLabels:
      env: dev
  ingress:
    - fromEntities:
      - host
      - remote-node
`,
	// intro: EnableDefaultDeny (intercept-all-dns)
	"intercept-all-dns": `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: intercept-all-dns
spec:
  endpointSelector:
    matchExpressions:
      - key: "io.kubernetes.pod.namespace"
        operator: "NotIn"
        values:
        - "kube-system"
      - key: "k8s-app"
        operator: "NotIn"
        values:
        - kube-dns
  enableDefaultDeny:
    egress: false
    ingress: false
  egress:
    - toEndpoints:
        - matchLabels:
            io.kubernetes.pod.namespace: kube-system
            k8s-app: kube-dns
      toPorts:
        - ports:
          - port: "53"
            protocol: TCP
          - port: "53"
            protocol: UDP
          rules:
            dns:
              - matchPattern: "*"
`,
}

var testPodIP = 0

// cpod is a pod end: namespace and label pairs.
func cpod(ns string, kv ...string) CiliumEndpoint {
	testPodIP++
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	e := schema.Endpoint{Namespace: ns, Pod: fmt.Sprintf("pod-%d", testPodIP), Workload: "w", WorkloadKind: "Deployment", Labels: l}
	return CiliumEndpointOf(&e, netip.AddrFrom4([4]byte{10, 0, 1, byte(testPodIP)}), nil)
}

// cworld is an address outside the cluster, with the DNS names Hubble gave it.
func cworld(ip string, names ...string) CiliumEndpoint {
	e := schema.Endpoint{Workload: "world", WorkloadKind: schema.KindReserved, Labels: map[string]string{"reserved:world": ""}}
	return CiliumEndpointOf(&e, netip.MustParseAddr(ip), names)
}

// creserved is a reserved identity (kube-apiserver, remote-node...) as
// Hubble names it.
func creserved(name, ip string) CiliumEndpoint {
	e := schema.Endpoint{Workload: name, WorkloadKind: schema.KindReserved, Labels: map[string]string{"reserved:" + name: ""}}
	return CiliumEndpointOf(&e, netip.MustParseAddr(ip), nil)
}

func TestCiliumSemanticsFromDocs(t *testing.T) {
	dev := cpod("default", "env", "dev")
	frontend, backend, other := cpod("default", "role", "frontend"), cpod("default", "role", "backend"), cpod("default", "role", "other")
	frontendNS2 := cpod("ns2", "role", "frontend")
	victim, public, restricted := cpod("default", "role", "victim"), cpod("default", "role", "public"), cpod("default", "role", "restricted")
	svc, app := cpod("default", "app", "myService"), cpod("default", "app", "test-app")
	kubeDNS := cpod("kube-system", "k8s-app", "kube-dns")
	leia, luke, vader := cpod("ns1", "name", "leia"), cpod("ns2", "name", "luke"), cpod("ns2", "name", "vader")
	rebels := cpod("default", "name", "rebel-base")
	ally := cpod("alliance-ns", "app", "x", "io.cilium.k8s.namespace.labels.faction", "alliance")
	empire := cpod("empire-ns", "app", "x", "io.cilium.k8s.namespace.labels.faction", "empire")
	podIn10 := cpod("default", "app", "in-ten") // 10.0.1.x: inside toCIDRSet 10.0.0.0/8, but a pod
	for _, c := range []struct {
		doc, policy, what string
		src, dst          CiliumEndpoint
		proto             string
		port              uint16
		allowed           bool
	}{
		{docLayer3, "l3-rule", "frontend to backend, any port", frontend, backend, "TCP", 8080, true},
		{docLayer3, "l3-rule", "another pod to backend", other, backend, "TCP", 8080, false},
		{docLayer3, "l3-rule", "a frontend of another namespace (the policy's namespace is implied)", frontendNS2, backend, "TCP", 8080, false},
		{docLayer3, "l3-rule", "backend's egress is not restricted", backend, cworld("1.1.1.1"), "TCP", 443, true},
		{docLayer3, "allow-all-to-victim", "any pod of the namespace to victim", other, victim, "TCP", 80, true},
		{docLayer3, "allow-all-to-victim", "fromEndpoints {} is the policy's namespace only", frontendNS2, victim, "TCP", 80, false},
		{docLayer3, "allow-all-to-victim", "world is no endpoint", cworld("1.1.1.1"), victim, "TCP", 80, false},
		{docLayer3, "deny-all-egress", "egress: [{}] denies all egress", restricted, other, "TCP", 80, false},
		{docLayer3, "deny-all-egress", "egress: [{}] leaves ingress alone", other, restricted, "TCP", 80, true},
		{docDeny, "deny-egress-example", "egressDeny wins over toEntities all", frontend, backend, "TCP", 80, false},
		{docDeny, "deny-egress-example", "the rest is allowed by toEntities all", frontend, cworld("8.8.8.8"), "UDP", 53, true},
		{docLayer3, "cidr-rule", "toCIDR 20.1.1.1/32", svc, cworld("20.1.1.1"), "TCP", 443, true},
		{docLayer3, "cidr-rule", "toCIDRSet 10.0.0.0/8", svc, cworld("10.200.0.1"), "TCP", 443, true},
		{docLayer3, "cidr-rule", "toCIDRSet except 10.96.0.0/12", svc, cworld("10.96.0.10"), "TCP", 443, false},
		{docLayer3, "cidr-rule", "an address outside both", svc, cworld("8.8.8.8"), "TCP", 443, false},
		{docLayer3, "cidr-rule", "CIDR rules do not apply when both ends are managed by Cilium", svc, podIn10, "TCP", 443, false},
		{docLayer3, "from-world-to-role-public", "world to public", cworld("1.2.3.4"), public, "TCP", 443, true},
		{docLayer3, "from-world-to-role-public", "a pod to public", other, public, "TCP", 443, false},
		{docDeny, "external-lockdown", "ingressDeny world, in every namespace", cworld("1.2.3.4"), leia, "TCP", 80, false},
		{docDeny, "external-lockdown", "ingress from all entities: pods of other namespaces", luke, leia, "TCP", 80, true},
		{docLayer3, "to-fqdn", "DNS to kube-dns over UDP (protocol ANY)", app, kubeDNS, "UDP", 53, true},
		{docLayer3, "to-fqdn", "DNS to kube-dns over TCP (protocol ANY)", app, kubeDNS, "TCP", 53, true},
		{docLayer3, "to-fqdn", "kube-dns on another port", app, kubeDNS, "TCP", 8080, false},
		{docLayer3, "to-fqdn", "matchName my-remote-service.com", app, cworld("93.184.216.34", "my-remote-service.com"), "TCP", 443, true},
		{docLayer3, "to-fqdn", "matchName is case-insensitive, trailing dot ignored", app, cworld("93.184.216.34", "My-Remote-Service.com."), "TCP", 443, true},
		{docLayer3, "to-fqdn", "another name", app, cworld("93.184.216.35", "other.com"), "TCP", 443, false},
		{docLayer3, "to-fqdn", "an address without a name", app, cworld("93.184.216.35"), "TCP", 443, false},
		{docLayer3, "to-fqdn-pattern", "*.cilium.io matches sub.cilium.io", app, cworld("104.198.14.52", "sub.cilium.io"), "TCP", 443, true},
		{docLayer3, "to-fqdn-pattern", "*.cilium.io does not match cilium.io", app, cworld("104.198.14.52", "cilium.io"), "TCP", 443, false},
		{docLayer3, "to-fqdn-pattern", "*.cilium.io does not match sub.sub.cilium.io", app, cworld("104.198.14.52", "sub.sub.cilium.io"), "TCP", 443, false},
		{docLayer4, "l4-rule", "port 80/TCP to anyone", svc, cworld("1.1.1.1"), "TCP", 80, true},
		{docLayer4, "l4-rule", "port 80/TCP to a pod", svc, other, "TCP", 80, true},
		{docLayer4, "l4-rule", "another port", svc, cworld("1.1.1.1"), "TCP", 443, false},
		{docLayer4, "l4-rule", "port 80 over UDP", svc, cworld("1.1.1.1"), "UDP", 80, false},
		{docLayer4, "l3-l4-rule", "frontend to backend on 80", frontend, backend, "TCP", 80, true},
		{docLayer4, "l3-l4-rule", "frontend to backend on 8080", frontend, backend, "TCP", 8080, false},
		{docLayer4, "l4-port-range-rule", "444, the end of the range", svc, cworld("1.1.1.1"), "TCP", 444, true},
		{docLayer4, "l4-port-range-rule", "445, past it", svc, cworld("1.1.1.1"), "TCP", 445, false},
		{docKubernetes, "k8s-expose-across-namespace", "luke in ns2 to leia in ns1", luke, leia, "TCP", 80, true},
		{docKubernetes, "k8s-expose-across-namespace", "vader in ns2 to leia", vader, leia, "TCP", 80, false},
		{docKubernetes, "alliance-only", "a pod of a namespace labelled faction=alliance", ally, rebels, "TCP", 80, true},
		{docKubernetes, "alliance-only", "a pod of a namespace labelled faction=empire", empire, rebels, "TCP", 80, false},
		{docLayer3, "dev-to-kube-apiserver", "dev to the API server", dev, creserved("kube-apiserver", "172.18.0.2"), "TCP", 6443, true},
		{docLayer3, "dev-to-kube-apiserver", "dev to a remote node", dev, creserved("remote-node", "172.18.0.3"), "TCP", 10250, false},
		{docLayer3, "dev-to-kube-apiserver", "dev to world", dev, cworld("1.1.1.1"), "TCP", 443, false},
		{docLayer3, "to-dev-from-nodes-in-cluster", "a remote node to dev", creserved("remote-node", "172.18.0.3"), dev, "TCP", 8080, true},
		{docLayer3, "to-dev-from-nodes-in-cluster", "world to dev", cworld("1.1.1.1"), dev, "TCP", 8080, false},
		{docLayer3, "to-dev-from-nodes-in-cluster", "a pod to dev", other, dev, "TCP", 8080, false},
		{docIntro, "intercept-all-dns", "enableDefaultDeny false: DNS allowed", app, kubeDNS, "UDP", 53, true},
		{docIntro, "intercept-all-dns", "enableDefaultDeny false: other egress still allowed", app, cworld("1.1.1.1"), "TCP", 443, true},
	} {
		t.Run(c.policy+"/"+c.what, func(t *testing.T) {
			cnps, err := ParseCiliumPolicies([]byte(ciliumDocPolicies[c.policy]))
			if err != nil || len(cnps) != 1 {
				t.Fatalf("%d policies, %v", len(cnps), err)
			}
			ev, err := NewCiliumEvaluator(cnps)
			if err != nil {
				t.Fatal(err)
			}
			if len(ev.Unsupported) > 0 {
				t.Errorf("not judged: %v", ev.Unsupported)
			}
			d := ev.Evaluate(c.src, c.dst, c.proto, c.port)
			if d.Allowed != c.allowed {
				t.Errorf("%s → %s %s/%d: allowed %v (%s), want %v per %s", c.src, c.dst, c.proto, c.port, d.Allowed, d.Reason, c.allowed, c.doc)
			}
			if !d.Allowed && (d.Reason == "" || len(d.Isolated) == 0 || !strings.Contains(d.Reason, d.Isolated[0])) {
				t.Errorf("denial without a reason naming the policy: %+v", d)
			}
		})
	}
}

// What cannot be judged is named and selects nobody; a peer field given
// as an empty list selects nobody but still starts the default deny
// (Cilium's pkg/policy/utils: "empty non-nil slices ... should not result
// in any identity being selected").
func TestCiliumNotJudgedAndEmptyLists(t *testing.T) {
	cnps, err := ParseCiliumPolicies([]byte(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: odd, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: []
  egress:
  - toServices:
    - k8sService: {serviceName: db, namespace: shop}
  - toNodes:
    - matchLabels: {node-role.kubernetes.io/control-plane: ""}
  - toPorts: [{ports: [{port: https, protocol: TCP}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewCiliumEvaluator(cnps)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Unsupported) != 1 || !strings.Contains(ev.Unsupported[0], "shop/odd") ||
		!strings.Contains(ev.Unsupported[0], "toServices") || !strings.Contains(ev.Unsupported[0], "toNodes") || !strings.Contains(ev.Unsupported[0], "named port https") {
		t.Errorf("not judged: %q", ev.Unsupported)
	}
	web, client := cpod("shop", "app", "web"), cpod("shop", "app", "client")
	if d := ev.Evaluate(client, web, "TCP", 80); d.Allowed {
		t.Errorf("fromEndpoints: [] allowed %s", d.Reason)
	}
	if d := ev.Evaluate(web, creserved("remote-node", "172.18.0.3"), "TCP", 443); d.Allowed {
		t.Errorf("toNodes (not judged) allowed %s", d.Reason)
	}
	if d := ev.Evaluate(web, client, "TCP", 443); d.Allowed {
		t.Errorf("a named port (not judged) allowed %s", d.Reason)
	}
}

// FuzzCiliumPolicies: whatever a policy file holds, reading and judging it
// returns an error or a decision, never a panic (verify reads policies
// from pull requests). Seeds: the documentation examples above.
func FuzzCiliumPolicies(f *testing.F) {
	for _, k := range sortedKeys(ciliumDocPolicies) {
		f.Add([]byte(ciliumDocPolicies[k]))
	}
	web, client := cpod("default", "app", "web"), cpod("other", "role", "frontend")
	ends := []CiliumEndpoint{web, client, cworld("10.96.0.10", "sub.cilium.io"), creserved("kube-apiserver", "172.18.0.2")}
	f.Fuzz(func(t *testing.T, data []byte) {
		cps, err := ParseCiliumPolicies(data)
		if err != nil {
			return
		}
		ev, err := NewCiliumEvaluator(cps)
		if err != nil {
			return
		}
		for _, a := range ends {
			for _, b := range ends {
				d := ev.Evaluate(a, b, "TCP", 443)
				if !d.Allowed && d.Reason == "" {
					t.Fatalf("a denial without a reason: %+v", d)
				}
			}
		}
	})
}
