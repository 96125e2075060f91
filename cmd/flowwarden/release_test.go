package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// dockerStageRuns returns the RUN commands of the Dockerfile stage named
// stage (FROM … AS stage), backslash continuations joined.
func dockerStageRuns(t *testing.T, dockerfile, stage string) []string {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		runs    []string
		in      bool
		pending string
	)
	from := regexp.MustCompile(`(?i)^FROM\s+\S+(\s+AS\s+(\S+))?`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if m := from.FindStringSubmatch(line); m != nil {
			in = strings.EqualFold(m[2], stage)
			continue
		}
		if in && strings.HasPrefix(strings.ToUpper(line), "RUN ") {
			runs = append(runs, strings.TrimSpace(line[4:]))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return runs
}

// TestDockerfileBuildStage runs the Dockerfile build stage's release command
// (there is no image builder here; the command is the part that can differ
// from CI's build) with the build arguments a release passes, then checks
// that the binary is stripped and that `version -o json` names the version,
// commit and date.
func TestDockerfileBuildStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary")
	}
	root := repoRoot(t)
	var release string
	for _, r := range dockerStageRuns(t, filepath.Join(root, "Dockerfile"), "build") {
		if strings.Contains(r, "make release") {
			release = r
		}
	}
	if release == "" {
		t.Fatal("the Dockerfile's build stage does not run `make release`")
	}
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^release:\n\t\$\(GO\) build -trimpath -ldflags "\$\(RELEASE_LDFLAGS\)"`).Match(makefile) ||
		!bytes.Contains(makefile, []byte("RELEASE_LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)")) {
		t.Fatal("the Makefile's release target is not the stripped, trimmed build with version, commit and date")
	}
	out := t.TempDir()
	want := buildInfo{Version: "9.8.7-test", Commit: "0123456789abcdef0123456789abcdef01234567", Date: "2026-11-30T12:34:56Z"}
	cmd := exec.Command("sh", "-c", release)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION="+want.Version, "COMMIT="+want.Commit, "DATE="+want.Date)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", release, err, b)
	}
	bin := filepath.Join(out, "flowwarden")
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ef.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
		t.Errorf("the release binary has a symbol table (err %v): not stripped", err)
	}
	if ef.Section(".debug_info") != nil {
		t.Error("the release binary has DWARF: not built with -w")
	}
	ef.Close()
	st, _ := os.Stat(bin)
	t.Logf("release binary: %.1f MB", float64(st.Size())/1e6)

	js, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("version -o json: %v", err)
	}
	var got buildInfo
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, js)
	}
	if got.Version != want.Version || got.Commit != want.Commit || got.Date != want.Date || got.GoVersion == "" {
		t.Errorf("version -o json = %+v, want %+v", got, want)
	}
}

// TestDependencyLicences: every module linked into the binaries carries a
// licence compatible with distributing flowwarden under Apache-2.0
// (Apache-2.0, MIT, BSD, ISC; MPL-2.0 used unmodified), and none is GPL.
func TestDependencyLicences(t *testing.T) {
	root := repoRoot(t)
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}@{{.Version}}\t{{.Dir}}{{end}}", "./...")
	cmd.Dir = root
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	kinds := []struct{ name, marker string }{
		{"Apache-2.0", "Apache License"},
		{"MIT", "Permission is hereby granted, free of charge"},
		{"BSD", "Redistribution and use in source and binary forms"},
		{"ISC", "Permission to use, copy, modify, and"},
		{"MPL-2.0", "Mozilla Public License"},
	}
	seen := map[string]bool{}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		mod, dir, _ := strings.Cut(line, "\t")
		if seen[mod] {
			continue
		}
		seen[mod] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Errorf("%s: %v", mod, err)
			continue
		}
		var found []string
		for _, e := range entries {
			n := strings.ToLower(e.Name())
			if e.IsDir() || strings.HasSuffix(n, ".go") || !(strings.HasPrefix(n, "licen") || strings.HasPrefix(n, "copying")) {
				continue
			}
			text, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			// The GNU licences' titles (MPL-2.0's text names them in mixed case).
			if bytes.Contains(text, []byte("GNU GENERAL PUBLIC LICENSE")) || bytes.Contains(text, []byte("GNU AFFERO GENERAL PUBLIC")) || bytes.Contains(text, []byte("GNU LESSER GENERAL PUBLIC")) {
				t.Errorf("%s: %s is a GNU licence", mod, e.Name())
			}
			for _, k := range kinds {
				if bytes.Contains(text, []byte(k.marker)) {
					found = append(found, k.name)
					break
				}
			}
		}
		if len(found) == 0 {
			t.Errorf("%s: no recognised licence file in %s", mod, dir)
			continue
		}
		counts[found[0]]++
	}
	if !seen["github.com/flowwarden/flowwarden@"] {
		t.Error("the main module is not among the listed modules")
	}
	t.Logf("%d modules by licence: %v", len(seen), counts)
}
