package enforcer

import (
	"net/netip"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func intOrStr(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
