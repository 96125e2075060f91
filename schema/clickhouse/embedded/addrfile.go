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
}

func (s *Server) writeAddrFile() error {
	b, _ := json.Marshal(Running{PID: os.Getpid(), Native: s.NativeAddr(), HTTP: s.HTTPAddr()})
	tmp := filepath.Join(s.cfg.DataDir, addrFileName+".tmp")
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("write %s: %w", addrFileName, err)
	}
	return os.Rename(tmp, filepath.Join(s.cfg.DataDir, addrFileName))
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
