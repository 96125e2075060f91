package embedded

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// addrFileName records, in the data dir, where the running embedded server
// listens, so that other flowwarden commands (query, report) use it instead
// of trying to open the same data dir a second time.
const addrFileName = "embedded-clickhouse.json"

// Running describes an embedded server started by another process.
type Running struct {
	PID    int    `json:"pid"`
	Native string `json:"native"`
	HTTP   string `json:"http"`
	// cred is read from the data dir's credentials file (owner only).
	cred Credentials
}

// DSN is a clickhouse-go DSN for the given database as AdminUser.
func (r *Running) DSN(database string) string {
	return dsn(AdminUser, r.cred.Admin, r.Native, database)
}

// ReaderDSN is a clickhouse-go DSN for the given database as ReaderUser.
func (r *Running) ReaderDSN(database string) string {
	return dsn(ReaderUser, r.cred.Reader, r.Native, database)
}

func (s *Server) writeAddrFile() error {
	b, _ := json.Marshal(Running{PID: os.Getpid(), Native: s.NativeAddr(), HTTP: s.HTTPAddr()})
	if err := writeFileAtomic(filepath.Join(s.cfg.DataDir, addrFileName), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", addrFileName, err)
	}
	return nil
}

func (s *Server) removeAddrFile() {
	_ = os.Remove(filepath.Join(s.cfg.DataDir, addrFileName))
}

// FindRunning returns the embedded server that another flowwarden process
// runs on dataDir, if it answers.
func FindRunning(dataDir string) (*Running, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, addrFileName))
	if err != nil {
		return nil, err
	}
	var r Running
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", addrFileName, err)
	}
	cb, err := os.ReadFile(filepath.Join(dataDir, credentialsFileName))
	if err != nil {
		return nil, fmt.Errorf("embedded ClickHouse credentials: %w", err)
	}
	if err := json.Unmarshal(cb, &r.cred); err != nil {
		return nil, fmt.Errorf("read %s: %w", credentialsFileName, err)
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + r.HTTP + "/ping")
	if err != nil {
		return nil, fmt.Errorf("embedded server recorded in %s does not answer: %w", dataDir, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("embedded server recorded in " + dataDir + " is not healthy")
	}
	return &r, nil
}
