package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// reapOrphans stops and removes the clusters of test binaries that died without closing
// them. t.Cleanup runs when a test fails or panics, but not when the binary itself is
// killed: Ctrl-C, go test -timeout, a panic in a goroutine of the test's own. pg_ctl
// detaches the server from its parent, so such a server would otherwise hold its memory
// and port until the machine reboots.
//
// It is best effort, and careful: it only touches pgtest-* directories in the temp
// directory that belong to the server's OS user and whose ownerFile names a process that no
// longer exists, and it leaves a directory alone when a live process holds the PID in its
// postmaster.pid and /proc cannot prove that process is the cluster's postmaster.
func reapOrphans(ctx context.Context, bin binaries, cred *syscall.Credential, logf func(string, ...any)) {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	uid := uint32(os.Geteuid())
	if cred != nil {
		uid = cred.Uid
	}
	for _, entry := range entries {
		if !entry.IsDir() || !strings.HasPrefix(entry.Name(), "pgtest-") {
			continue
		}
		root := filepath.Join(tmp, entry.Name())
		owner, orphaned := orphanedBy(root, uid)
		if !orphaned {
			continue
		}
		orphan := &Cluster{
			opts:   Options{Logf: logf},
			bin:    bin,
			cred:   cred,
			locale: "C",
			root:   root,
			data:   filepath.Join(root, "data"),
		}
		if alive, sure := livePostmaster(orphan.data); alive && !sure {
			continue
		}
		orphan.logf("pgtest: cluster %s outlived its test process %d; removing it", root, owner)
		if err := orphan.destroy(ctx); err != nil {
			orphan.logf("pgtest: could not remove orphaned cluster: %v", err)
		}
	}
}

// orphanedBy reports whether the cluster directory root belongs to uid and the process that
// made it has exited, and which process that was. A directory without ownerFile is being
// made right now (ownerFile is written first) or is not ours.
func orphanedBy(root string, uid uint32) (owner int, orphaned bool) {
	info, err := os.Stat(root)
	if err != nil {
		return 0, false
	}
	if st, ok := info.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
		return 0, false
	}
	content, err := os.ReadFile(filepath.Join(root, ownerFile))
	if err != nil {
		return 0, false
	}
	owner, err = strconv.Atoi(strings.TrimSpace(string(content)))
	if err != nil || owner <= 0 {
		return 0, false
	}
	return owner, !processAlive(owner)
}
