package embedded

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ClickHouse's local mode, which the embedded server is, reads any path the
// process can: its user_files_path is forced to "everywhere" and the scalar
// file() function checks no grant at all. No ClickHouse setting turns that
// off, so the child confines itself with Landlock (Linux ≥ 5.13, no
// privilege needed) before it starts ClickHouse: it may read and write
// beneath its data path, read its configuration, and read only what the
// server needs of the system (its own /proc entry, a few /proc and /sys
// files, shared libraries, time zones, /dev/null and the random devices).
// Everything else, /etc and the rest of the data dir included, is refused
// to every query of every user.

// Landlock access rights by ABI version; a right the kernel does not know
// is simply not restricted.
const (
	llFileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	llRead = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	// llReadWrite is everything but executing and making devices.
	llReadWrite = llRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_SYM |
		unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	llDevice = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
)

func handledRights(abi int) uint64 {
	h := uint64(0x1fff) // ABI 1: execute … make_sym
	if abi >= 2 {
		h |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		h |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		h |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	return h
}

// errNoLandlock: the kernel has no Landlock (or it is disabled).
var errNoLandlock = errors.New("landlock is not available")

// LandlockABI is the kernel's Landlock ABI version, 0 when there is none.
func LandlockABI() int {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */)
	if e != 0 {
		return 0
	}
	return int(v)
}

// systemReadPaths are what ClickHouse reads of the system while serving.
var systemReadPaths = []string{
	"/proc/self", // resolves to this process's own /proc/<pid>
	"/proc/meminfo", "/proc/cpuinfo", "/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/vmstat",
	"/proc/pressure", "/proc/sys/kernel/osrelease", "/proc/sys/kernel/pid_max", "/proc/sys/vm/overcommit_memory",
	"/sys/fs/cgroup", "/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/kernel/mm/transparent_hugepage",
	"/lib", "/lib64", "/usr/lib", "/usr/lib64",
	"/etc/localtime", "/usr/share/zoneinfo",
}

var devicePaths = []string{"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"}

// confine restricts the calling OS thread, and every thread it creates
// afterwards (all of ClickHouse's), to the paths above plus dataPath
// (read-write) and configDir (read). The caller must hold the thread
// (runtime.LockOSThread) and run ClickHouse on it.
func confine(dataPath, configDir string) error {
	abi := LandlockABI()
	if abi < 1 {
		return errNoLandlock
	}
	handled := handledRights(abi)
	attr := unix.LandlockRulesetAttr{Handled_access_fs: handled}
	fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), 8 /* handled_access_fs only */, 0)
	if e != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", e)
	}
	defer unix.Close(int(fd))
	add := func(path string, access uint64) error {
		f, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) {
			return nil // nothing there to allow
		}
		if err != nil {
			return fmt.Errorf("landlock: open %s: %w", path, err)
		}
		defer unix.Close(f)
		var st unix.Stat_t
		if err := unix.Fstat(f, &st); err != nil {
			return fmt.Errorf("landlock: stat %s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			access &= llFileRights
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: access & handled, Parent_fd: int32(f)}
		if _, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, 1 /* LANDLOCK_RULE_PATH_BENEATH */, uintptr(unsafe.Pointer(&rule)), 0, 0, 0); e != 0 {
			return fmt.Errorf("landlock: allow %s: %w", path, e)
		}
		return nil
	}
	if err := add(dataPath, llReadWrite); err != nil {
		return err
	}
	if err := add(configDir, llRead); err != nil {
		return err
	}
	for _, p := range systemReadPaths {
		if err := add(p, llRead); err != nil {
			return err
		}
	}
	for _, p := range devicePaths {
		if err := add(p, llDevice); err != nil {
			return err
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); e != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", e)
	}
	return nil
}
