package schema

import "strings"

// WorkloadFromPod derives the owning workload's name and kind from a pod name
// and its labels when the source did not report the owner (older Hubble flows
// carry no "workloads" field). It recognises the naming Kubernetes controllers
// use: Deployment pods "<name>-<rs-hash>-<5>", StatefulSet pods "<name>-<ordinal>",
// DaemonSet and Job pods "<name>-<5>" (kind "" when the labels do not tell
// which). Unknown shapes give (pod, "Pod").
func WorkloadFromPod(pod string, labels map[string]string) (name, kind string) {
	if pod == "" {
		return "", ""
	}
	if job := labels["job-name"]; job != "" {
		return job, "Job"
	}
	if ss, ok := labels["statefulset.kubernetes.io/pod-name"]; ok && ss == pod {
		if i := strings.LastIndexByte(pod, '-'); i > 0 {
			return pod[:i], "StatefulSet"
		}
	}
	i := strings.LastIndexByte(pod, '-')
	if i <= 0 || !isKubeSuffix(pod[i+1:], 5, 5) {
		return pod, "Pod"
	}
	base := pod[:i]
	if j := strings.LastIndexByte(base, '-'); j > 0 && isKubeSuffix(base[j+1:], 6, 10) {
		if _, hashed := labels["pod-template-hash"]; hashed || len(labels) == 0 || hasDigitAndLetter(base[j+1:]) {
			return base[:j], "Deployment"
		}
	}
	if _, ok := labels["controller-revision-hash"]; ok {
		return base, "DaemonSet"
	}
	// A DaemonSet, Job or bare ReplicaSet: the name alone does not tell which.
	return base, ""
}

// isKubeSuffix reports whether s looks like a generated name suffix: lower-case
// alphanumerics of the given length, from Kubernetes' safe alphabet (no vowels).
func isKubeSuffix(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
		switch c {
		case 'a', 'e', 'i', 'o', 'u':
			return false
		}
	}
	return true
}

func hasDigitAndLetter(s string) bool {
	var d, l bool
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			d = true
		} else {
			l = true
		}
	}
	return d && l
}
