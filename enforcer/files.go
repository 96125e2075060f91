package enforcer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// MarshalPolicy renders one policy as YAML, stable byte for byte.
func MarshalPolicy(np networkingv1.NetworkPolicy) ([]byte, error) {
	np.TypeMeta.APIVersion, np.TypeMeta.Kind = "networking.k8s.io/v1", "NetworkPolicy"
	b, err := yaml.Marshal(np)
	if err != nil {
		return nil, fmt.Errorf("marshal %s/%s: %w", np.Namespace, np.Name, err)
	}
	b = bytes.ReplaceAll(b, []byte("  creationTimestamp: null\n"), nil)
	b = bytes.ReplaceAll(b, []byte("status: {}\n"), nil)
	return b, nil
}

// PolicyPath is where a generated policy goes under a directory:
// <namespace>/<workload>.yaml.
func PolicyPath(np networkingv1.NetworkPolicy, prefix string) string {
	return filepath.Join(np.Namespace, strings.TrimPrefix(np.Name, prefix)+".yaml")
}

// WriteDir writes the policies under dir and returns the relative paths.
func WriteDir(dir string, policies []networkingv1.NetworkPolicy, prefix string) ([]string, error) {
	var paths []string
	for _, np := range policies {
		b, err := MarshalPolicy(np)
		if err != nil {
			return nil, err
		}
		rel := PolicyPath(np, prefix)
		full := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, rel)
	}
	sort.Strings(paths)
	return paths, nil
}

// eachYAMLFile calls fn with the path and content of every .yaml or .yml
// file under dir, in lexical order; the first error stops the walk.
func eachYAMLFile(dir string, fn func(path string, raw []byte) error) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return fn(path, raw)
	})
}

// parseYAMLDir gathers what parse reads from each YAML file under dir (or
// the file dir), in lexical order; an error names its file.
func parseYAMLDir[T any](dir string, parse func([]byte) ([]T, error)) ([]T, error) {
	var out []T
	err := eachYAMLFile(dir, func(path string, raw []byte) error {
		items, err := parse(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, items...)
		return nil
	})
	return out, err
}

// LoadDir reads every NetworkPolicy in the YAML files under dir (several
// documents per file, and List objects, are fine).
func LoadDir(dir string) ([]networkingv1.NetworkPolicy, error) {
	out, err := parseYAMLDir(dir, ParsePolicies)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name })
	return out, nil
}

// ParsePolicies reads NetworkPolicies from YAML documents; other kinds are
// skipped, malformed policies rejected.
func ParsePolicies(raw []byte) ([]networkingv1.NetworkPolicy, error) {
	var out []networkingv1.NetworkPolicy
	// apimachinery's reader splits on "---" lines as kubectl does (a
	// separator may carry a comment; "---x" is an error, not a split).
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for i := 0; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err == nil && v == nil {
			continue // empty, or comments only
		}
		var head struct {
			Kind  string           `json:"kind"`
			Items []map[string]any `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch head.Kind {
		case "NetworkPolicy":
			var np networkingv1.NetworkPolicy
			if err := yaml.UnmarshalStrict(doc, &np); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			if np.Namespace == "" {
				np.Namespace = "default"
			}
			out = append(out, np)
		case "NetworkPolicyList", "List":
			var list networkingv1.NetworkPolicyList
			if err := yaml.Unmarshal(doc, &list); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			for _, np := range list.Items {
				if np.Kind == "" || np.Kind == "NetworkPolicy" {
					if np.Namespace == "" {
						np.Namespace = "default"
					}
					out = append(out, np)
				}
			}
		case "":
			return nil, errors.New("document without kind")
		}
	}
	return out, nil
}

// LeftOutFile, written next to generated policies, records the observed
// edges left out on purpose (guardrails), so that verify can tell those
// intended denials from regressions.
const LeftOutFile = "flowwarden-left-out.json"

type leftOutRecord struct {
	Edge   string `json:"edge"`
	Reason string `json:"reason"`
	Flows  uint64 `json:"flows"`
}

// EdgeKey is a stable text form of an edge.
func EdgeKey(e Edge) string {
	return e.From.String() + " → " + e.To.String() + " " + e.Protocol + "/" + strconv.Itoa(int(e.Port))
}

func (p Peer) String() string {
	if p.Kind == PeerWorkload {
		return p.Workload
	}
	return p.Addr.String()
}

// WriteLeftOut writes the left-out edges under dir.
func WriteLeftOut(dir string, skipped []Skipped) error {
	recs := []leftOutRecord{}
	for _, s := range skipped {
		recs = append(recs, leftOutRecord{Edge: EdgeKey(s.Edge), Reason: s.Reason, Flows: s.Stats.Flows})
	}
	b, _ := json.MarshalIndent(recs, "", "  ")
	return os.WriteFile(filepath.Join(dir, LeftOutFile), append(b, '\n'), 0o644)
}

// LoadLeftOut reads the left-out edges of a generated directory (none when
// the file is absent): edge key → reason.
func LoadLeftOut(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, LeftOutFile))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []leftOutRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("%s: %w", LeftOutFile, err)
	}
	out := map[string]string{}
	for _, r := range recs {
		out[r.Edge] = r.Reason
	}
	return out, nil
}
