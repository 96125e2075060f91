package clickhouse_test

import (
	"testing"

	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

func TestMain(m *testing.M) { chtest.Main(m) }
