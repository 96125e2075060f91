package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFlag is the output format of a printing command, set with -o /
// --output as in kubectl and hubble; --format stays as an alias of it. Each
// command lists the formats it prints (json, table and yaml where they make
// sense, plus its own such as csv); Set refuses others, so a typo fails
// before any work is done.
type outputFlag struct {
	value   string
	allowed []string
}

func (o *outputFlag) String() string { return o.value }
func (o *outputFlag) Type() string   { return "format" }

func (o *outputFlag) Set(s string) error {
	s = strings.ToLower(strings.TrimSpace(s))
	if !slices.Contains(o.allowed, s) {
		return fmt.Errorf("unknown output format %q (want one of %s)", s, strings.Join(o.allowed, ", "))
	}
	o.value = s
	return nil
}

// register adds -o/--output and its alias --format to cmd.
func (o *outputFlag) register(cmd *cobra.Command, def string, allowed ...string) {
	o.value, o.allowed = def, allowed
	usage := "output format: " + strings.Join(allowed, ", ")
	cmd.Flags().VarP(o, "output", "o", usage)
	cmd.Flags().Var(o, "format", "alias of --output")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(allowed, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(allowed, cobra.ShellCompDirectiveNoFileComp))
}

// print writes v as JSON (indented) or YAML, or calls tableFn for the table
// format (the table is flushed after it returns). Commands with other
// formats handle those before calling print.
func (o *outputFlag) print(w io.Writer, v any, tableFn func(t *table)) error {
	switch o.value {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	default:
		t := newTable(w)
		tableFn(t)
		return t.flush()
	}
}

// table is a tab-aligned table, as kubectl get prints.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer) *table { return &table{tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)} }

func (t *table) header(cols ...string) { t.row(cols...) }
func (t *table) row(cols ...string)    { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
func (t *table) flush() error          { return t.tw.Flush() }
