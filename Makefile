# flowwarden — build, test, run.
GO            ?= go
BIN           := bin/flowwarden
CHDB_PACKAGE  := @chdb/lib-linux-x64-gnu
CHDB_VERSION  := 26.7.3-stable.1
LIBCHDB       := .deps/libchdb.so
# make run replays the published samples and the incident scenarios together.
# (The *.flows.jsonl.gz breach scenarios are in the tests' own format, not Hubble's.)
RUN_FILES     := $(filter-out %.flows.jsonl.gz,$(wildcard testdata/hubble/*.json testdata/hubble/*.jsonl testdata/hubble/*.log testdata/scenarios/*.jsonl.gz))
RUN_RATE      ?= 1000
REPLAY_ADDR   ?= 127.0.0.1:4245
LISTEN        ?= 127.0.0.1:9965
ALERTMANAGER  ?= /usr/bin/prometheus-alertmanager
AM_ADDR       ?= 127.0.0.1:9093
DATA_DIR      ?= ./flowwarden-data
BENCHTIME     ?= 2s

# Fuzz budgets per target, as execution counts (about 15 s each here). A
# duration (-fuzztime 15s) can fail a clean run with "context deadline
# exceeded" when the deadline meets a running input (go.dev/issue/75804, a
# race in Go's fuzz coordinator fixed in Go 1.27); FUZZTIME=1m overrides all
# of them for a longer local run.
FUZZ_DECODE   ?= 60000x
FUZZ_WIRE     ?= 60000x
FUZZ_PARSE    ?= 150000x
FUZZ_CONFIG   ?= 3000x
FUZZ_SCAN     ?= 150000x

.PHONY: all build release deps prereqs test race bench fuzz lint check-imports run clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/flowwarden

# The release build, and the only place its command is written: the
# Dockerfile's build stage runs `make release`, and a test
# (TestDockerfileBuildStage) runs that stage's command and checks what
# `flowwarden version -o json` says. Symbols stripped (-s -w), paths trimmed;
# version from the VERSION file (the tag deploy/ pins), commit and date from
# git unless given (docker build --build-arg COMMIT=… DATE=…).
VERSION       ?= $(shell cat VERSION)
COMMIT        ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE          ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
RELEASE_LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

release:
	$(GO) build -trimpath -ldflags "$(RELEASE_LDFLAGS)" -o $(BIN) ./cmd/flowwarden

# libchdb.so (ClickHouse as a library) for the embedded database, from npm.
deps: $(LIBCHDB)

$(LIBCHDB):
	@command -v npm >/dev/null || { echo "npm is needed to fetch libchdb.so (apt-get install npm)"; exit 1; }
	mkdir -p .deps
	cd .deps && rm -rf package && npm pack --silent $(CHDB_PACKAGE)@$(CHDB_VERSION) >/dev/null \
	  && tar xzf chdb-lib-linux-x64-gnu-$(CHDB_VERSION).tgz package/libchdb.so \
	  && mv package/libchdb.so libchdb.so.partial && mv libchdb.so.partial libchdb.so \
	  && rm -rf package chdb-lib-linux-x64-gnu-$(CHDB_VERSION).tgz
	@echo "libchdb.so ready in .deps/"

# The Debian packages the tests need (Alertmanager, Chromium, promtool, nft,
# iproute2, gcc): installed when missing as root (or with password-less
# sudo); otherwise one line names them and make stops before testing.
# .ci/prereqs holds the list; .ci/run uses it too.
prereqs:
	@bash .ci/prereqs

# Unit and integration tests; integration tests start a real embedded
# ClickHouse (or use FLOWWARDEN_TEST_CLICKHOUSE) and real gRPC over loopback.
test: prereqs deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

# staticcheck is pinned by the tool directive in go.mod (go get -tool ...@version).
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(MAKE) check-imports

# The import direction of DESIGN.md over the production packages (go list):
# schema imports no component; ingest, analyze, alerting and enforcer import
# schema but neither the storage layer nor each other; only cmd wires.
check-imports:
	$(GO) test -count=1 -run '^TestImportDirection$$' ./cmd/flowwarden

# The library packages again under the race detector (their goroutines: the
# writer and spool, the observer client, the pollers, the diff's workers,
# the page's shared builds). CI runs it after make test.
race: prereqs deps
	$(GO) test -race -count=1 -timeout 15m ./alerting/... ./analyze/... ./enforcer/... ./ingest/... ./schema/...

# Benchmarks: each reports a ratio against its baseline measured in the same run.
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./...

# Fuzz targets, each for its budget (CI runs them briefly; crashes land in
# testdata/fuzz/ of the package and become regression tests).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_DECODE)) ./ingest/hubble
	$(GO) test -run '^$$' -fuzz '^FuzzWireDecode$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_WIRE)) ./ingest/hubble
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_PARSE)) ./ingest/envoy
	$(GO) test -run '^$$' -fuzz '^FuzzScanner$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_SCAN)) ./ingest/jsonscan
	$(GO) test -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_CONFIG)) ./cmd/flowwarden

# The demo: replay the published Hubble samples together with the incident
# scenarios of testdata/scenarios over real gRPC, re-timed to now, at
# RUN_RATE flows/s, again and again; serve stores them in the embedded
# ClickHouse and runs the detectors: within a minute the page shows findings
# with their SQL. With Alertmanager installed (Debian prometheus-alertmanager;
# not required), a throwaway one runs on AM_ADDR and receives the alerts.
# cmd/flowwarden's TestMakeRun runs this target.
run: deps build
	@mkdir -p $(DATA_DIR); am=""; amflag=""; \
	  if [ -x "$(ALERTMANAGER)" ]; then \
	    mkdir -p $(DATA_DIR)/alertmanager; \
	    printf 'route:\n  receiver: demo\n  group_wait: 1s\nreceivers:\n  - name: demo\n' > $(DATA_DIR)/alertmanager/am.yml; \
	    $(ALERTMANAGER) --config.file=$(DATA_DIR)/alertmanager/am.yml --storage.path=$(DATA_DIR)/alertmanager/data \
	      --web.listen-address=$(AM_ADDR) --cluster.listen-address= --log.level=warn & am=$$!; \
	    amflag="--alertmanager http://$(AM_ADDR)"; \
	  fi; \
	  $(BIN) replay $(addprefix --file ,$(RUN_FILES)) --listen $(REPLAY_ADDR) --rate $(RUN_RATE) --loop --shift-to-now --keep-spacing --log-level warn & \
	  replay=$$!; trap 'kill $$replay $$am 2>/dev/null' EXIT INT TERM; \
	  for i in $$(seq 1 300); do bash -c 'exec 3<>/dev/tcp/$$0/$$1' $(subst :, ,$(REPLAY_ADDR)) 2>/dev/null && break; sleep 0.1; done; \
	  echo ""; \
	  echo "flowwarden: replaying $(words $(RUN_FILES)) files (the Hubble samples and the incident scenarios), re-timed to now,"; \
	  echo "  on $(REPLAY_ADDR) into serve and the embedded ClickHouse under $(DATA_DIR). Findings appear within a minute."; \
	  echo "  page:     http://$(LISTEN)/  (service map, findings with their SQL, recommended policies)"; \
	  echo "  metrics:  curl http://$(LISTEN)/metrics | grep -E 'flowwarden_(findings|alerts)'"; \
	  if [ -n "$$am" ]; then echo "  alerts:   http://$(AM_ADDR)/#/alerts  (Alertmanager)"; fi; \
	  echo "  query:    $(BIN) query --data-dir $(DATA_DIR) \"SELECT detector, severity, summary FROM findings FINAL\""; \
	  echo "  stop:     Ctrl-C"; echo ""; \
	  $(BIN) serve --hubble $(REPLAY_ADDR) --listen $(LISTEN) --data-dir $(DATA_DIR) --flush-interval 1s $$amflag

clean:
	rm -rf bin
