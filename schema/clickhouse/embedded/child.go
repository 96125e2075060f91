// Package embedded runs a local ClickHouse server from libchdb.so (ClickHouse
// as a library) in a supervised child process, so that flowwarden works with
// no external database. The child loads the library with purego and calls
// chdb_query_cmdline with clickhouse-local arguments that start the TCP and
// HTTP listeners and then keep a never-ending query alive; the parent talks to
// it with the same clickhouse-go code it uses for any remote server.
package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"
)

// Environment variables that turn a flowwarden (or test) binary into the
// embedded server child. The parent sets them; nobody else needs to.
const (
	envChild      = "FLOWWARDEN_EMBEDDED_CLICKHOUSE_CHILD"
	envChildDir   = "FLOWWARDEN_EMBEDDED_CLICKHOUSE_DIR"
	envTCPPort    = "FLOWWARDEN_EMBEDDED_CLICKHOUSE_TCP_PORT"
	envHTTPPort   = "FLOWWARDEN_EMBEDDED_CLICKHOUSE_HTTP_PORT"
	envConfigFile = "FLOWWARDEN_EMBEDDED_CLICKHOUSE_CONFIG"
	// EnvLibPath names libchdb.so explicitly.
	EnvLibPath = "CHDB_LIB_PATH"
)

// keepAliveQuery opens the listeners and then blocks forever: clickhouse-local
// serves network clients only while a query runs. The marker comment lets the
// supervisor and the query guard recognise it in system.processes.
const keepAliveQuery = "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; " +
	"SELECT /* flowwarden-keepalive */ sleepEachRow(1) FROM system.numbers " +
	"SETTINGS max_block_size=1, function_sleep_max_microseconds_per_block=0 FORMAT Null"

// KeepAliveMarker is present in the text of the query that keeps the embedded
// server listening; it must never be killed.
const KeepAliveMarker = "flowwarden-keepalive"

// FindLibrary returns the path of libchdb.so: $CHDB_LIB_PATH, then
// ./.deps/libchdb.so, then .deps/libchdb.so next to the executable and in its
// parent directories (so tests run from package directories find the repo copy).
func FindLibrary() (string, error) {
	if p := os.Getenv(EnvLibPath); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%q: %w", EnvLibPath, p, err)
		}
		return p, nil
	}
	var dirs []string
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		for {
			p := filepath.Join(d, ".deps", "libchdb.so")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("libchdb.so not found: run `make deps` or set CHDB_LIB_PATH")
}

// IsChild reports whether this process was started as the embedded server.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// RunChildIfRequested turns the current process into the embedded server when
// the supervisor started it as one, and never returns in that case. Call it
// first thing in main (and in TestMain of tests that start the server).
func RunChildIfRequested() {
	if !IsChild() {
		return
	}
	tcp, _ := strconv.Atoi(os.Getenv(envTCPPort))
	httpPort, _ := strconv.Atoi(os.Getenv(envHTTPPort))
	err := ServeForever(os.Getenv(envChildDir), tcp, httpPort, os.Getenv(envConfigFile))
	fmt.Fprintln(os.Stderr, "embedded clickhouse:", err)
	os.Exit(3)
}

// ServeForever loads libchdb.so and serves ClickHouse on 127.0.0.1 with data
// in dir and the configuration file configFile (users and paths; see
// writeServerConfig). Before ClickHouse starts, the thread that runs it is
// confined with Landlock to dir and the configuration's directory (see
// confine); without Landlock it serves unconfined and says so on stderr.
// It returns only on failure.
func ServeForever(dir string, tcpPort, httpPort int, configFile string) error {
	if dir == "" || tcpPort <= 0 || httpPort <= 0 || configFile == "" {
		return fmt.Errorf("embedded server needs a data dir, a config file and ports (dir=%q config=%q tcp=%d http=%d)", dir, configFile, tcpPort, httpPort)
	}
	lib, err := FindLibrary()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	runtime.LockOSThread()
	h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return fmt.Errorf("load %s: %w", lib, err)
	}
	var queryCmdline func(argc int32, argv unsafe.Pointer) unsafe.Pointer
	purego.RegisterLibFunc(&queryCmdline, h, "chdb_query_cmdline")
	switch err := confine(dir, filepath.Dir(configFile)); {
	case errors.Is(err, errNoLandlock):
		fmt.Fprintln(os.Stderr, "embedded clickhouse: WARNING: no Landlock in this kernel: queries can read any file this process can (file())")
	case err != nil:
		return err
	}

	args := []string{
		"clickhouse",
		"--config-file=" + configFile,
		"--path=" + dir,
		"--tcp_port=" + strconv.Itoa(tcpPort),
		"--http_port=" + strconv.Itoa(httpPort),
		"--listen_host=127.0.0.1",
		"--multiquery",
		"--query=" + keepAliveQuery,
	}
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		// Interactive mode (its queries first, then a prompt that never
		// comes) only to keep clickhouse-local from installing its
		// error handler that kills the process on any uncaught exception
		// in a connection thread, which a failed native login is: with
		// it, one wrong password stopped the server.
		args = append(args, "--interactive", "--disable_suggestion", "--progress=off")
	}
	cargs := make([]*byte, len(args)+1)
	keep := make([][]byte, len(args))
	for i, a := range args {
		keep[i] = append([]byte(a), 0)
		cargs[i] = &keep[i][0]
	}
	queryCmdline(int32(len(args)), unsafe.Pointer(&cargs[0]))
	runtime.KeepAlive(keep)
	runtime.KeepAlive(cargs)
	return errors.New("chdb_query_cmdline returned: the server stopped")
}
