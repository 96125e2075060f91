package main

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// Set at link time by `make release` (-X main.version=… -X main.commit=…
// -X main.date=…). Empty commit and date fall back to what the Go toolchain
// stamped into the binary (vcs.revision, vcs.time), so a plain `go build` in
// a git checkout still names its commit.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// buildInfo is what `flowwarden version` prints and what the
// flowwarden_build_info metric carries as labels.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func currentBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && b.Commit != "" {
			b.Commit += "-dirty"
		}
		if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version // go install …@v1.2.3
		}
	}
	return b
}

// newBuildInfoCollector is the flowwarden_build_info gauge (always 1, the
// build in its labels), the convention Prometheus itself follows.
func newBuildInfoCollector() prometheus.Collector {
	b := currentBuildInfo()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flowwarden_build_info",
		Help: "The running flowwarden build: version, commit, build date and Go version as labels; always 1.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "commit": b.Commit, "date": b.Date, "goversion": b.GoVersion,
		},
	}, func() float64 { return 1 })
}

func newVersionCommand() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Example: `  flowwarden version
  flowwarden version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := currentBuildInfo()
			return out.print(cmd.OutOrStdout(), b, func(t *table) {
				t.header("VERSION", "COMMIT", "DATE", "GO", "PLATFORM")
				t.row(b.Version, orDash(b.Commit), orDash(b.Date), b.GoVersion, b.Platform)
			})
		},
	}
	out.register(cmd, "table", "table", "json", "yaml")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
