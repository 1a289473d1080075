package pgtest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNewReapsOrphans(t *testing.T) {
	t.Parallel()
	orphan, err := New(t.Context(), Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { orphan.Close() })

	// Make the cluster look like the leftover of a test binary that was killed.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.root, ownerFile), []byte(strconv.Itoa(gone.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	Start(t, Options{})
	if _, err := os.Stat(orphan.root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphaned cluster directory %s: stat: %v, want not exist", orphan.root, err)
	}
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", orphan.Port()), time.Second); err == nil {
		conn.Close()
		t.Errorf("orphaned server on port %d still accepts connections", orphan.Port())
	}
}

func TestReapSparesLiveOwners(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{})
	Start(t, Options{})
	if _, err := os.Stat(c.Dir()); err != nil {
		t.Errorf("cluster of a live process was reaped: %v", err)
	}
}
