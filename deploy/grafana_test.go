package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowwarden/flowwarden/ingest/hubble"
	"github.com/flowwarden/flowwarden/schema"
	"github.com/flowwarden/flowwarden/schema/clickhouse"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func TestMain(m *testing.M) { chtest.Main(m) }

// grafanaMacros expands the ClickHouse data-source macros the way the
// plugin does, for a 400-day range ending now, and the dashboard's
// variables as Grafana does: database flowwarden, namespace as given ("*"
// is All, the variable's allValue).
func grafanaMacros(sql, namespace string) string {
	sql = strings.NewReplacer("${database}", "flowwarden", "${namespace}", namespace).Replace(sql)
	sql = regexp.MustCompile(`\$__timeFilter\((\w+)\)`).ReplaceAllString(sql, "$1 >= now() - INTERVAL 400 DAY AND $1 <= now()")
	sql = regexp.MustCompile(`\$__timeInterval\((\w+)\)`).ReplaceAllString(sql, "toStartOfInterval($1, INTERVAL 60 second)")
	return sql
}

// TestDashboardPanelsReturnRows runs every panel's SQL against the real
// ClickHouse holding the published samples (re-timed into the last days,
// with a dropped cross-namespace flow and an old edge added), on one server
// and on a two-shard cluster, where the panels must give as many rows.
func TestDashboardPanelsReturnRows(t *testing.T) {
	native, _ := chtest.Server(t)
	now := time.Now()                                                                             // both get the very same flows, so the same time buckets
	single := panelRows(t, now, chtest.DSN(native, "flowwarden"), clickhouse.SchemaConfig{}, nil) // the panels name the database
	shards := chtest.Cluster(t, "fw", 2)
	clustered := panelRows(t, now, shards[0].DSN("flowwarden"), clickhouse.SchemaConfig{Cluster: "fw", EachHost: true}, clickhouse.MigrateEachHost)
	for title, n := range single {
		if clustered[title] != n {
			t.Errorf("%s: %d rows on one server, %d on the two-shard cluster", title, n, clustered[title])
		}
	}
}

// panelRows loads the data into a fresh flowwarden database at dsn and
// returns the number of rows each panel's query gives.
func panelRows(t *testing.T, now time.Time, dsn string, cfg clickhouse.SchemaConfig,
	migrateEachHost func(context.Context, driver.Conn, string, clickhouse.SchemaConfig, *slog.Logger) error) map[string]int {
	t.Helper()
	raw, err := os.ReadFile("grafana/flowwarden-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name     string `json:"name"`
				Query    string `json:"query"`
				AllValue string `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := clickhouse.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS flowwarden SYNC"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if conn, err = clickhouse.Open(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if migrateEachHost != nil {
		err = migrateEachHost(ctx, conn, dsn, cfg, nil)
	} else {
		err = clickhouse.Migrate(ctx, conn, cfg, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The scenario with a cross-namespace scan has denials and world egress.
	flows, err := hubble.ReadFlows(ctx, "../testdata/scenarios/cross-namespace-scan.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	shift := now.Add(-2 * time.Hour).Sub(flows[0].Time)
	for i := range flows {
		flows[i].Time = flows[i].Time.Add(shift)
	}
	old := flows[0]
	old.Time = now.Add(-60 * 24 * time.Hour) // an edge last used two months ago
	old.Src.Workload, old.Src.Namespace = "retired-batch", "bookinfo"
	flows = append(flows, old)
	// Two inbound requests an Envoy sidecar logged, one with mutual TLS.
	for _, mtls := range []bool{true, false} {
		in := flows[1]
		in.Source, in.Direction, in.IsReply, in.MTLS = schema.SourceEnvoy, schema.DirectionIngress, false, mtls
		in.Dst.Namespace, in.Dst.Workload = "bookinfo", "ratings-v1"
		flows = append(flows, in)
	}
	if err := clickhouse.WriteAll(ctx, dsn, flows); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, `INSERT INTO findings (id, detector, severity, namespace, workload, peer, summary, start, end, status, flows, evidence, query, updated_at)
		SETTINGS distributed_foreground_insert = 1 VALUES ('f1', 'egress-denial-spike', 'critical', 'tenant-a', 'scanner', '', 'scan', now64(9), now64(9), 'open', 300, '{}', 'SELECT 1', now64(6)),
		('f2', 'dns-tunnel', 'critical', 'tenant-a', 'scanner', 'exfil-tunnel.net', 'tunnel', now64(9) - INTERVAL 1 MINUTE, now64(9), 'open', 900, '{}', 'SELECT 1', now64(6))`); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) != 7 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	rows := map[string]int{}
	for _, p := range dash.Panels {
		if strings.Contains(p.Targets[0].RawSQL, "flowwarden.") || !strings.Contains(p.Targets[0].RawSQL, "${database}.") ||
			!strings.Contains(p.Targets[0].RawSQL, "${namespace}") {
			t.Errorf("%s: the database and the namespace are not the dashboard's variables:\n%s", p.Title, p.Targets[0].RawSQL)
		}
		// A namespace nothing is in: the panel filters by it.
		if res, err := clickhouse.Query(ctx, conn, grafanaMacros(p.Targets[0].RawSQL, "no-such-namespace"), clickhouse.DefaultQueryLimits()); err != nil || len(res.Rows) != 0 {
			t.Errorf("%s: namespace filter not applied (%v)", p.Title, err)
		}
		sql := grafanaMacros(p.Targets[0].RawSQL, "*")
		if strings.Contains(sql, "$__") {
			t.Fatalf("%s: unexpanded macro in %s", p.Title, sql)
		}
		res, err := clickhouse.Query(ctx, conn, sql, clickhouse.DefaultQueryLimits())
		if err != nil {
			t.Errorf("%s: %v", p.Title, err)
			continue
		}
		if len(res.Rows) == 0 {
			t.Errorf("%s: no rows", p.Title)
		}
		rows[p.Title] = len(res.Rows)
	}
	// The variables' own queries: the database first, and the namespaces
	// that let a panel show something.
	vars := map[string][]string{}
	for _, v := range dash.Templating.List {
		if v.Query == "" || v.Name == "datasource" {
			continue
		}
		res, err := clickhouse.Query(ctx, conn, grafanaMacros(v.Query, "*"), clickhouse.DefaultQueryLimits())
		if err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		for _, r := range res.Rows {
			vars[v.Name] = append(vars[v.Name], fmt.Sprint(r[0]))
		}
		if v.Name == "namespace" && v.AllValue != "*" {
			t.Errorf("the namespace variable's All is %q, the panels test for \"*\"", v.AllValue)
		}
	}
	if len(vars["database"]) == 0 || vars["database"][0] != "flowwarden" || !slices.Contains(vars["namespace"], "tenant-a") {
		t.Errorf("variables offer %v", vars)
	}
	// Both open findings are about tenant-a.
	if res, err := clickhouse.Query(ctx, conn, grafanaMacros(dash.Panels[3].Targets[0].RawSQL, "tenant-a"), clickhouse.DefaultQueryLimits()); err != nil || len(res.Rows) != 2 {
		t.Errorf("%s for tenant-a: %v %v", dash.Panels[3].Title, res, err)
	}
	return rows
}
