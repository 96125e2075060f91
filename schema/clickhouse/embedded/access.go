package embedded

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Who may do what on the embedded server. ClickHouse's local mode runs its
// own keep-alive query as the user "default" with an empty password from
// 127.0.0.1, the very address every local client comes from, so "default"
// can neither have a password nor be told apart by network. It is made
// useless to anyone else instead: its profile allows one session, which the
// keep-alive holds from before the listeners open until the server stops
// (any other login as default is refused with USER_SESSION_LIMIT_EXCEEDED),
// and it may only open the listeners and count rows of system.numbers.
// flowwarden's own connections log in as AdminUser (writes, migrations) or
// ReaderUser (query and the other read paths), each with a random password
// kept in a file only the owner can read.
const (
	// AdminUser owns the flowwarden databases: it writes flows and runs
	// the migrations.
	AdminUser = "flowwarden"
	// ReaderUser can only read: SELECT grants and nothing else (no file,
	// url, remote, s3 or other source grant, no DDL, no settings that
	// loosen readonly).
	ReaderUser = "flowwarden_reader"

	credentialsFileName = "embedded-clickhouse-credentials.json"
	configDirName       = "clickhouse-config"
	// emptyDirName, inside the ClickHouse path, is where every path setting
	// that could reach files (user_files_path, user_scripts_path,
	// format_schema_path) points. It stays empty.
	emptyDirName = "empty"
)

// Credentials are the passwords of AdminUser and ReaderUser.
type Credentials struct {
	Admin  string `json:"admin"`
	Reader string `json:"reader"`
}

// CredentialsFile is where the passwords of the embedded server on dataDir
// are kept (JSON, owner read/write only).
func CredentialsFile(dataDir string) string { return filepath.Join(dataDir, credentialsFileName) }

func randomSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// loadOrCreateCredentials returns the passwords kept in dataDir (owner
// read/write only), creating them on first use; admin, when not empty,
// replaces the admin password (a test cluster shares one).
func loadOrCreateCredentials(dataDir, admin string) (Credentials, error) {
	path := filepath.Join(dataDir, credentialsFileName)
	var c Credentials
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("read %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("read embedded ClickHouse credentials: %w", err)
	}
	changed := false
	if admin != "" && c.Admin != admin {
		c.Admin, changed = admin, true
	}
	for _, p := range []*string{&c.Admin, &c.Reader} {
		if *p == "" || !isHex(*p) {
			s, err := randomSecret()
			if err != nil {
				return c, err
			}
			*p, changed = s, true
		}
	}
	if !changed {
		return c, os.Chmod(path, 0o600)
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return c, fmt.Errorf("embedded clickhouse: %w", err)
	}
	b, _ := json.Marshal(c)
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return c, fmt.Errorf("write embedded ClickHouse credentials: %w", err)
	}
	return c, nil
}

// isHex: passwords go into DSNs, XML and HTTP headers unescaped, so only
// hex digits are accepted (a test's fixed password too).
func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return s != ""
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// writeServerConfig writes the child's configuration into dir (owner only):
// config.xml with the confined paths and users.xml with the three users; the
// operator's extra file, if any, is copied into config.d so that ClickHouse
// merges it over config.xml. It returns the path of config.xml.
func writeServerConfig(dir, chPath, extra string, cred Credentials) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "config.d"), 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	empty := filepath.Join(chPath, emptyDirName)
	if err := os.MkdirAll(empty, 0o700); err != nil {
		return "", err
	}
	// Leftovers of an older extra file must not stay merged.
	old, _ := filepath.Glob(filepath.Join(dir, "config.d", "*"))
	for _, p := range old {
		_ = os.Remove(p)
	}
	if extra != "" {
		b, err := os.ReadFile(extra)
		if err != nil {
			return "", fmt.Errorf("read extra ClickHouse config: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(dir, "config.d", "extra"+filepath.Ext(extra)), b, 0o600); err != nil {
			return "", err
		}
	}
	users := filepath.Join(dir, "users.xml")
	if err := writeFileAtomic(users, []byte(usersXML(cred)), 0o600); err != nil {
		return "", err
	}
	emptyDir := xmlEscape(empty + "/")
	cfg := "<clickhouse>\n" +
		"  <users_config>" + xmlEscape(users) + "</users_config>\n" +
		// The keep-alive user "default" has no password (see above).
		"  <allow_no_password>1</allow_no_password>\n" +
		"  <allow_plaintext_password>0</allow_plaintext_password>\n" +
		"  <user_files_path>" + emptyDir + "</user_files_path>\n" +
		"  <user_scripts_path>" + emptyDir + "</user_scripts_path>\n" +
		"  <format_schema_path>" + emptyDir + "</format_schema_path>\n" +
		"  <dictionaries_config>" + emptyDir + "none.xml</dictionaries_config>\n" +
		"  <user_defined_executable_functions_config>" + emptyDir + "none.xml</user_defined_executable_functions_config>\n" +
		"</clickhouse>\n"
	path := filepath.Join(dir, "config.xml")
	if err := writeFileAtomic(path, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// usersXML: the keep-alive "default" (one session, listen and count only),
// the admin, and the reader whose profile pins readonly (2: it may set
// limits such as max_execution_time, never write or lower readonly) and
// whose only grant is SELECT (so no file, url, remote, s3, executable or
// other source, and no dictionaries).
func usersXML(c Credentials) string {
	return `<clickhouse>
  <profiles>
    <default/>
    <keepalive>
      <max_sessions_for_user>1</max_sessions_for_user>
    </keepalive>
    <reader>
      <readonly>2</readonly>
      <allow_ddl>0</allow_ddl>
      <allow_introspection_functions>0</allow_introspection_functions>
      <constraints>
        <readonly><const/></readonly>
        <allow_ddl><const/></allow_ddl>
        <allow_introspection_functions><const/></allow_introspection_functions>
      </constraints>
    </reader>
  </profiles>
  <quotas><default/></quotas>
  <users>
    <default>
      <no_password/>
      <networks><host>localhost</host></networks>
      <profile>keepalive</profile>
      <quota>default</quota>
      <access_management>0</access_management>
      <grants>
        <query>GRANT SYSTEM LISTEN ON *.*</query>
        <query>GRANT SELECT ON system.numbers</query>
      </grants>
    </default>
    <` + AdminUser + `>
      <password_sha256_hex>` + sha256Hex(c.Admin) + `</password_sha256_hex>
      <networks><host>localhost</host></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>0</access_management>
    </` + AdminUser + `>
    <` + ReaderUser + `>
      <password_sha256_hex>` + sha256Hex(c.Reader) + `</password_sha256_hex>
      <networks><host>localhost</host></networks>
      <profile>reader</profile>
      <quota>default</quota>
      <access_management>0</access_management>
      <grants>
        <query>GRANT SELECT ON *.*</query>
      </grants>
    </` + ReaderUser + `>
  </users>
</clickhouse>
`
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

// dsn is a clickhouse-go DSN for user at addr.
func dsn(user, password, addr, database string) string {
	return "clickhouse://" + user + ":" + password + "@" + addr + "/" + database
}
