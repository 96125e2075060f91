package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowwarden/flowwarden/schema/freeport"
)

// Config configures the embedded server.
type Config struct {
	// DataDir holds the databases; it persists across restarts.
	DataDir string
	// TCPPort and HTTPPort are the loopback ports; 0 picks free ones.
	TCPPort, HTTPPort int
	// StartTimeout bounds the wait for the server to answer /ping.
	StartTimeout time.Duration
	// RestartBackoff is the first pause before restarting a child that
	// died; each further restart in a row waits twice as long, up to
	// MaxRestartBackoff, with jitter. A child that served for
	// StableAfter resets it.
	RestartBackoff, MaxRestartBackoff, StableAfter time.Duration
	// ConfigFile is an extra ClickHouse configuration file (XML or YAML)
	// merged over the defaults, e.g. remote_servers for a local cluster.
	ConfigFile string
	// AdminPassword, when set, is AdminUser's password (a test cluster's
	// servers share one to reach each other). Otherwise a random one is
	// made once and kept, with ReaderUser's, in the data dir (mode 0600).
	// Only hex digits.
	AdminPassword string
	// Command is the program (and arguments) to run as the child; it must call
	// RunChildIfRequested early. Defaults to this executable.
	Command []string
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("embedded clickhouse: data dir is required")
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("embedded clickhouse: data dir: %w", err)
	}
	c.DataDir = abs
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = time.Second
	}
	if c.MaxRestartBackoff == 0 {
		c.MaxRestartBackoff = time.Minute
	}
	if c.MaxRestartBackoff < c.RestartBackoff {
		c.MaxRestartBackoff = c.RestartBackoff
	}
	if c.StableAfter == 0 {
		c.StableAfter = time.Minute
	}
	if c.AdminPassword != "" && !isHex(c.AdminPassword) {
		return errors.New("embedded clickhouse: the admin password must be hex digits")
	}
	if len(c.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("embedded clickhouse: find own executable: %w", err)
		}
		c.Command = []string{exe}
	}
	return nil
}

// Server supervises one embedded ClickHouse child process.
type Server struct {
	cfg  Config
	lib  string
	log  *slog.Logger
	cred Credentials

	// pickedTCP/pickedHTTP: the config left the port at 0, so Start may
	// pick again when another process binds it first.
	pickedTCP, pickedHTTP bool

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	restarts int
}

// New validates the config and picks ports; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	lib, err := FindLibrary()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	cred, err := loadOrCreateCredentials(cfg.DataDir, cfg.AdminPassword)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lib: lib, cred: cred, log: log.With("component", "embedded-clickhouse")}
	if err := s.choosePorts(); err != nil {
		return nil, err
	}
	return s, nil
}

// choosePorts fills the ports the config left at 0.
func (s *Server) choosePorts() error {
	free, err := freeport.Loopback(2)
	if err != nil {
		return fmt.Errorf("embedded clickhouse: %w", err)
	}
	if s.cfg.TCPPort == 0 || s.pickedTCP {
		s.cfg.TCPPort, s.pickedTCP = free[0], true
	}
	if s.cfg.HTTPPort == 0 || s.pickedHTTP {
		s.cfg.HTTPPort, s.pickedHTTP = free[1], true
	}
	return nil
}

// NativeAddr is host:port of the native protocol listener.
func (s *Server) NativeAddr() string { return "127.0.0.1:" + strconv.Itoa(s.cfg.TCPPort) }

// HTTPAddr is host:port of the HTTP listener.
func (s *Server) HTTPAddr() string { return "127.0.0.1:" + strconv.Itoa(s.cfg.HTTPPort) }

// DSN is a clickhouse-go DSN for the given database as AdminUser.
func (s *Server) DSN(database string) string {
	return dsn(AdminUser, s.cred.Admin, s.NativeAddr(), database)
}

// ReaderDSN is a clickhouse-go DSN for the given database as ReaderUser,
// who can only read.
func (s *Server) ReaderDSN(database string) string {
	return dsn(ReaderUser, s.cred.Reader, s.NativeAddr(), database)
}

// Credentials are the passwords of AdminUser and ReaderUser.
func (s *Server) Credentials() Credentials { return s.cred }

// PID is the child's process id, 0 when none was started.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Restarts counts how many times the child was restarted after dying.
func (s *Server) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Start launches the child and waits until it answers. When a port it
// picked itself was taken in the meantime, it picks new ones and tries
// again (three times in all); ports given in the config are never changed.
func (s *Server) Start(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		if err := s.launch(); err != nil {
			return err
		}
		err := s.waitReady(ctx)
		if err == nil {
			break
		}
		s.Stop()
		if !(s.pickedTCP || s.pickedHTTP) || attempt == 3 || !errors.Is(err, errPortTaken) {
			return err
		}
		s.log.Warn("a port was taken before the server bound it; picking new ports", "native", s.NativeAddr(), "http", s.HTTPAddr())
		if err := s.choosePorts(); err != nil {
			return err
		}
	}
	return s.writeAddrFile()
}

func (s *Server) launch() error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("embedded clickhouse: %w", err)
	}
	logPath := filepath.Join(s.cfg.DataDir, "embedded-clickhouse.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("embedded clickhouse: open log: %w", err)
	}
	chPath := filepath.Join(s.cfg.DataDir, "clickhouse")
	configFile, err := writeServerConfig(filepath.Join(s.cfg.DataDir, configDirName), chPath, s.cfg.ConfigFile, s.cred)
	if err != nil {
		logFile.Close()
		return fmt.Errorf("embedded clickhouse: write its configuration: %w", err)
	}
	cmd := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	// A minimal environment: nothing of ours (tokens, DSNs, proxies) is
	// the server's business.
	cmd.Env = []string{
		envChild + "=1",
		EnvLibPath + "=" + s.lib,
		envChildDir + "=" + chPath,
		envTCPPort + "=" + strconv.Itoa(s.cfg.TCPPort),
		envHTTPPort + "=" + strconv.Itoa(s.cfg.HTTPPort),
		envConfigFile + "=" + configFile,
	}
	if tz, ok := os.LookupEnv("TZ"); ok {
		cmd.Env = append(cmd.Env, "TZ="+tz)
	}
	cmd.Dir = s.cfg.DataDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// A terminal on stdin makes the child run ClickHouse interactively,
	// which keeps a failed login from killing it (see ServeForever).
	ptm, pts, err := openPTY()
	if err != nil {
		s.log.Warn("no pseudo-terminal for the server: a failed native login will stop it (and the supervisor restart it)", "err", err)
	} else {
		cmd.Stdin = pts
	}
	closePTY := func() {
		if ptm != nil {
			ptm.Close()
			pts.Close()
		}
	}
	// The child dies with us, whatever way we go.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Pdeathsig fires when the forking thread exits, not the process (Go
	// issue 27505): fork from a locked thread that lives as long as the child.
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		logFile.Close()
		closePTY()
		close(exited)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		closePTY()
		return fmt.Errorf("embedded clickhouse: start child: %w", err)
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	s.log.Info("started", "pid", cmd.Process.Pid, "native", s.NativeAddr(), "http", s.HTTPAddr(), "data_dir", s.cfg.DataDir)
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + s.HTTPAddr() + "/ping"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			logPath := filepath.Join(s.cfg.DataDir, "embedded-clickhouse.log")
			tail := tailFile(logPath, 600)
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("embedded clickhouse exited during start-up (log %s): %w: %s", logPath, errPortTaken, tail)
			}
			return fmt.Errorf("embedded clickhouse exited during start-up (log %s): %s", logPath, tail)
		case <-ctx.Done():
			return fmt.Errorf("embedded clickhouse not ready after %s: %w", s.cfg.StartTimeout, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Run supervises the started child until ctx ends: a child that dies is
// restarted after a pause that doubles with each restart in a row (from
// RestartBackoff up to MaxRestartBackoff, with jitter) and starts over once
// a child has served for StableAfter. On return the child has been stopped.
func (s *Server) Run(ctx context.Context) error {
	defer s.Stop()
	failures := 0
	up := time.Now()
	for {
		s.mu.Lock()
		exited := s.exited
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-exited:
		}
		if time.Since(up) >= s.cfg.StableAfter {
			failures = 0
		}
		wait := restartDelay(failures, s.cfg.RestartBackoff, s.cfg.MaxRestartBackoff, randFloat)
		failures++
		s.log.Warn("child exited; restarting", "backoff", wait.Round(time.Millisecond), "restarts_in_a_row", failures)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		up = time.Now()
		if err := s.launch(); err != nil {
			s.log.Error("restart failed", "err", err)
			continue
		}
		if err := s.waitReady(ctx); err != nil {
			s.log.Error("restarted child not ready", "err", err)
			s.Kill()
			continue
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
}

// restartDelay is the pause before restart number n+1 in a row: base·2ⁿ
// capped at max, then drawn uniformly from its upper half (jitter, so
// that servers that died together do not restart in step).
func restartDelay(n int, base, max time.Duration, rnd func() float64) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(rnd()*float64(d/2))
}

// Kill sends SIGKILL to the child (for fault-injection tests).
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

// Stop terminates the child: SIGTERM, then SIGKILL after 10 s.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	s.removeAddrFile()
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// openPTY opens a pseudo-terminal pair: the child gets the terminal side
// as stdin (not as its controlling terminal), the supervisor holds the
// master until the child exits. Nothing is ever written to either.
func openPTY() (ptm, pts *os.File, err error) {
	ptm, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	return ptm, pts, nil
}

// tailFile returns the last n bytes of a file, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

var randFloat = rand.Float64
