//go:build linux

package spool

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDiskFullTmpfs fills a real filesystem: a 1 MiB tmpfs, which needs
// root to mount. TestDiskFull covers the same ground everywhere else with an
// injected error.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	// Something else on the filesystem takes most of it, and is deleted
	// later to make room.
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 512<<10), 0o640); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "spool")
	const segSize = 100 << 10
	s, err := Open(dir, Options{SegmentSize: segSize})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// 1. Append and sync until the disk is full.
	recs := makeRecs(400, 0x5_0000_0000, func(i int) int { return 3000 + i*7 })
	var durable []rec
	failed, inSync := -1, false
	for i := 0; i < len(recs) && failed < 0; i++ {
		if err := s.Append(recs[i].lsn, recs[i].payload); err != nil {
			checkDiskFull(t, err)
			failed = i
			break
		}
		if i%5 == 4 {
			if err := s.Sync(); err != nil {
				checkDiskFull(t, err)
				failed, inSync = i, true
				break
			}
			durable = recs[:i+1]
		}
	}
	if failed < 0 {
		t.Fatal("the disk never filled up")
	}
	t.Logf("disk full at record %d (in Sync: %v), %d records durable, %d bytes in segments", failed, inSync, len(durable), s.Bytes())

	// 2. Readers see exactly what was durable; the files hold nothing more
	//    than Bytes says.
	checkRecs(t, readAvailable(t, r), durable)
	var onDisk int64
	for _, path := range segFiles(t, dir) {
		fi, _ := os.Stat(path)
		onDisk += fi.Size()
	}
	if onDisk != s.Bytes() {
		t.Fatalf("files hold %d bytes, Bytes() says %d", onDisk, s.Bytes())
	}
	if err := s.Sync(); err != nil && !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Sync on a full disk: %v", err)
	}

	// 3. Space comes back: the same append succeeds, and so do the rest.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	// A record whose Append failed was not appended: append it again. One
	// whose Append succeeded is still buffered when Sync fails.
	i := failed
	if !inSync {
		if err := s.Append(recs[i].lsn, recs[i].payload); err != nil {
			t.Fatalf("retry Append #%d: %v", i, err)
		}
	}
	want := recs[:i+1]
	for _, rc := range recs[i+1 : i+40] {
		if err := s.Append(rc.lsn, rc.payload); err != nil {
			t.Fatal(err)
		}
		want = append(want, rc)
	}
	syncT(t, s)
	checkRecs(t, readAvailable(t, r), want[len(durable):])
	checkDisk(t, s, dir, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = nil
	s2 := openT(t, dir, segSize)
	checkRecs(t, drain(t, s2, 0), want)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}
