package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowwarden/flowwarden/schema/clickhouse"
)

func newQueryCommand(g *globals) *cobra.Command {
	var (
		output outputFlag
		lim    = clickhouse.DefaultQueryLimits()
	)
	cmd := &cobra.Command{
		Use:   `query [-o table|csv|json] "SQL"`,
		Short: "Run a read-only forensic SQL query (\"-\" reads it from stdin)",
		Example: `  flowwarden query "SELECT verdict, count() FROM flows GROUP BY verdict"
  flowwarden query -o json "SELECT * FROM flows WHERE dst_addr = '169.254.169.254' LIMIT 10"
  echo "SELECT count() FROM flows WHERE time > now() - INTERVAL 1 DAY" | flowwarden query -o csv -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sql := args[0]
			if sql == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("read query from stdin: %w", err)
				}
				sql = string(b)
			}
			if err := clickhouse.CheckReadOnly(sql); err != nil {
				return err
			}
			st, err := openStorage(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer st.Close()
			reader, err := st.OpenReader(cmd.Context())
			if err != nil {
				return err
			}
			defer reader.Close()
			res, err := clickhouse.Query(cmd.Context(), reader, sql, lim)
			if err != nil {
				return err
			}
			return writeResult(cmd.OutOrStdout(), output.value, res)
		},
	}
	output.register(cmd, "table", "table", "csv", "json")
	cmd.Flags().DurationVar(&lim.MaxExecutionTime, "timeout", lim.MaxExecutionTime, "server-side execution time limit (fractions of a second count; 0: none)")
	cmd.Flags().Uint64Var(&lim.MaxResultRows, "max-rows", lim.MaxResultRows, "fail rather than return more rows than this")
	return cmd
}

func writeResult(w io.Writer, format string, res *clickhouse.Result) error {
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(res.Columns)
		for _, row := range res.Rows {
			rec := make([]string, len(row))
			for i, v := range row {
				rec[i] = formatValue(v)
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	case "json":
		// One object per row, its keys in the order of the columns.
		keys := make([][]byte, len(res.Columns))
		for i, c := range res.Columns {
			k, err := json.Marshal(c)
			if err != nil {
				return err
			}
			keys[i] = k
		}
		var line bytes.Buffer
		for _, row := range res.Rows {
			line.Reset()
			line.WriteByte('{')
			for i, v := range row {
				if i > 0 {
					line.WriteByte(',')
				}
				val, err := json.Marshal(jsonValue(v))
				if err != nil {
					return fmt.Errorf("column %s: %w", res.Columns[i], err)
				}
				line.Write(keys[i])
				line.WriteByte(':')
				line.Write(val)
			}
			line.WriteString("}\n")
			if _, err := w.Write(line.Bytes()); err != nil {
				return err
			}
		}
		return nil
	default:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(res.Columns, "\t"))
		for _, row := range res.Rows {
			cells := make([]string, len(row))
			for i, v := range row {
				cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(formatValue(v))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(os.Stderr, "(%d rows)\n", len(res.Rows))
		return err
	}
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Time, net.IP, netip.Addr, *net.IP:
		return formatValue(x)
	}
	return v
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case net.IP:
		if v4 := x.To4(); v4 != nil {
			return v4.String()
		}
		return x.String()
	case *net.IP:
		if x == nil {
			return ""
		}
		return formatValue(*x)
	case netip.Addr:
		return x.Unmap().String()
	case []string:
		b, _ := json.Marshal(x)
		return string(b)
	case map[string]string:
		b, _ := json.Marshal(x)
		return string(b)
	case error:
		return x.Error()
	}
	return fmt.Sprint(v)
}
