package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowwarden/flowwarden/alerting/amtest"
	"github.com/flowwarden/flowwarden/schema/clickhouse/chtest"
)

// floodEnv makes the test binary a flood client (see floodClient).
const floodEnv = "FLOWWARDEN_TEST_FLOOD"

func init() {
	if v := os.Getenv(floodEnv); v != "" {
		var addr string
		var n int
		if _, err := fmt.Sscan(v, &addr, &n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		floodClient(addr, n)
		os.Exit(0)
	}
}

// floodClient opens n connections to addr, 500 dialling at a time; half
// of those that connect send a request and stay on keep-alive, half send
// nothing. It prints how many connected and holds them until its
// standard input closes.
func floodClient(addr string, n int) {
	var mu sync.Mutex
	var held []net.Conn
	sem := make(chan struct{}, 500)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err != nil {
				return
			}
			if i%2 == 0 {
				_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: flowwarden\r\n\r\n")
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("connected %d\n", len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// openFDs counts this process's open file descriptors.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestServeIdleConnectionFlood opens 20,000 connections to serve's page
// (from two client processes; half send a request and stay idle on
// keep-alive, half send nothing) while flows stream in. serve runs in this
// process with its descriptor limit lowered to 4,096: a server that
// accepted every connection would run out and leave ingest none. serve
// holds at most --max-connections of them (the rest wait in the kernel's
// queue), closes idle ones, and stores every flow the replay sent.
func TestServeIdleConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 connections")
	}
	const flood, clients, maxConns, fdLimit = 20000, 2, 256, 4096
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max < flood/clients+100 {
		t.Skipf("the hard descriptor limit %d is too low for the flood clients", old.Max)
	}
	lim := syscall.Rlimit{Cur: fdLimit, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })

	dsn, _ := chtest.Database(t)
	replay := sampleReplay(t, 120) // 1,916 flows over ~16 s
	listen := amtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, logs := runInBackground(ctx, "serve", "--clickhouse", dsn, "--hubble", replay.Addr(), "--listen", listen,
		"--data-dir", t.TempDir(), "--flush-interval", "200ms", "--detect=false", "--log-level", "warn", "--flows-ttl", "0",
		"--max-connections", fmt.Sprint(maxConns))
	waitUntil(t, 30*time.Second, "the first flows", func() bool { n, _ := countFlows(t, dsn); return n >= 100 })
	base := openFDs()
	var peak atomic.Int64
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if n := int64(openFDs() - base); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()

	start := time.Now()
	var stdins []io.Closer
	var procs []*exec.Cmd
	connected := 0
	for range clients {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", floodEnv, listen, flood/clients))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		stdins, procs = append(stdins, in), append(procs, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var n int
				if _, err := fmt.Sscanf(sc.Text(), "connected %d", &n); err == nil {
					connectedCh <- n
				}
			}
		}()
	}
	for range clients {
		select {
		case n := <-connectedCh:
			connected += n
		case <-time.After(2 * time.Minute):
			t.Fatal("the flood clients did not finish dialling")
		}
	}
	t.Logf("flood: %d of %d connections made (and held) in %s", connected, flood, time.Since(start).Round(time.Millisecond))
	waitUntil(t, 90*time.Second, "every flow the replay sent", func() bool { n, _ := countFlows(t, dsn); return n >= uint64(replay.Len()) })
	for _, in := range stdins {
		in.Close()
	}
	for _, p := range procs {
		_ = p.Wait()
	}
	close(stopSampling)
	<-sampled
	// The page answers again once the flood is gone.
	waitUntil(t, 30*time.Second, "/healthz after the flood", func() bool { code, _ := healthOf("http://" + listen + "/healthz"); return code == http.StatusOK })
	time.Sleep(time.Second) // duplicates, if any, would land now
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	rows, distinct := countFlows(t, dsn)
	t.Logf("stored %d flows (%d distinct); serve held at most %d more descriptors during the flood (bound %d connections, limit %d)", rows, distinct, peak.Load(), maxConns, fdLimit)
	if rows != 1916 || distinct != 1916-67 {
		t.Fatalf("during the flood: %d rows, %d distinct; want 1916 and 1849", rows, distinct)
	}
	if p := peak.Load(); p > maxConns+100 {
		t.Errorf("serve held %d more descriptors during the flood: more than its %d connections", p, maxConns)
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("serve ran out of descriptors:\n%s", logs.String())
	}
}

var connectedCh = make(chan int, 4)
