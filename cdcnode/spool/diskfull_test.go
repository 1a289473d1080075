package spool

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
)

// noSpace makes the spool's writes fail as on a full disk, after writing
// half of what they were given, as write(2) does when space runs out in the
// middle.
type noSpace struct{ on atomic.Bool }

func (n *noSpace) writeAt(f *os.File, p []byte, off int64) (int, error) {
	if !n.on.Load() {
		return f.WriteAt(p, off)
	}
	w, err := f.WriteAt(p[:len(p)/2], off)
	if err != nil {
		return w, err
	}
	return w, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
}

func checkDiskFull(t *testing.T, err error) {
	t.Helper()
	var dfe *DiskFullError
	if !errors.As(err, &dfe) || !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %v, want a *DiskFullError that is ErrDiskFull and ENOSPC", err)
	}
	mustContain(t, err, "disk full")
}

func TestDiskFull(t *testing.T) {
	small := makeRecs(40, 0x3_0000_0000, fixedSize(100))
	last := small[len(small)-1].lsn
	large := rec{last + 1, make([]byte, writeBufSize*2)}
	tests := []struct {
		name    string
		segSize int64
		// fail appends what the test has not yet appended of recs while
		// writes fail, and returns the error it got and the records the
		// spool took before it.
		fail func(t *testing.T, s *Spool) (error, []rec)
		// retry repeats the call that failed.
		retry func(t *testing.T, s *Spool) []rec
	}{
		{
			name: "the write in Sync",
			fail: func(t *testing.T, s *Spool) (error, []rec) {
				appendAll(t, s, small[20:], 0) // buffered: no write yet
				return s.Sync(), small[20:]
			},
			retry: func(t *testing.T, s *Spool) []rec { syncT(t, s); return nil },
		},
		{
			name: "the write of a full buffer in Append",
			fail: func(t *testing.T, s *Spool) (error, []rec) {
				for i, r := range small[20:] {
					if err := s.Append(r.lsn, r.payload); err != nil {
						return err, small[20 : 20+i]
					}
				}
				// Fill the buffer with copies of the last record until it
				// must be written.
				for i := 0; ; i++ {
					if err := s.Append(last, []byte("filler")); err != nil {
						taken := append([]rec(nil), small[20:]...)
						for range i {
							taken = append(taken, rec{last, []byte("filler")})
						}
						return err, taken
					}
				}
			},
			retry: func(t *testing.T, s *Spool) []rec {
				appendAll(t, s, []rec{{last, []byte("filler")}}, 0)
				return []rec{{last, []byte("filler")}}
			},
		},
		{
			name: "a large record in Append",
			fail: func(t *testing.T, s *Spool) (error, []rec) {
				return s.Append(large.lsn, large.payload), nil
			},
			retry: func(t *testing.T, s *Spool) []rec {
				appendAll(t, s, []rec{large}, 0)
				return []rec{large}
			},
		},
		{
			name:    "a large record starting a segment",
			segSize: 1,
			fail: func(t *testing.T, s *Spool) (error, []rec) {
				return s.Append(large.lsn, large.payload), nil
			},
			retry: func(t *testing.T, s *Spool) []rec {
				// The stream may come back with another record first: the
				// dropped segment is not named for the failed one.
				r := rec{large.lsn + 1, []byte("another")}
				appendAll(t, s, []rec{r}, 0)
				return []rec{r}
			},
		},
		{
			name:    "sealing a full segment",
			segSize: 1000,
			fail: func(t *testing.T, s *Spool) (error, []rec) {
				// small[20:] fits neither the segment nor, unsynced, the
				// file: the rollover must write it.
				for i, r := range small[20:] {
					if err := s.Append(r.lsn, r.payload); err != nil {
						return err, small[20 : 20+i]
					}
				}
				t.Fatal("no append failed")
				return nil, nil
			},
			retry: nil, // set below: append the rest of small
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, tt.segSize)
			ns := &noSpace{}
			s.writeAt = ns.writeAt
			appendAll(t, s, small[:20], 0)
			syncT(t, s)
			durable := small[:20]
			before, _ := s.Reader(0)
			defer before.Close()
			checkRecs(t, readAvailable(t, before), durable)

			// 1. The disk fills up.
			ns.on.Store(true)
			err, taken := tt.fail(t, s)
			checkDiskFull(t, err)
			if err := s.Sync(); err != nil && !errors.Is(err, ErrDiskFull) {
				t.Fatalf("Sync on a full disk: %v", err)
			}

			// 2. Nothing half written is on disk, readers see what was
			//    durable before, and a crash now would lose nothing durable.
			if s.Durable() != durable[len(durable)-1].lsn {
				t.Fatalf("Durable() = %s, want %s", formatLSN(s.Durable()), formatLSN(durable[len(durable)-1].lsn))
			}
			if got := readAvailable(t, before); len(got) != 0 {
				t.Fatalf("a reader saw %d records while the disk was full", len(got))
			}
			var onDisk int64
			for _, path := range segFiles(t, dir) {
				fi, _ := os.Stat(path)
				onDisk += fi.Size()
			}
			if onDisk != s.Bytes() {
				t.Fatalf("files hold %d bytes, Bytes() says %d", onDisk, s.Bytes())
			}
			crashed := copyDir(t, dir)
			c := openT(t, crashed, tt.segSize)
			checkRecs(t, drain(t, c, 0), durable)
			c.Close()

			// 3. Space comes back; the call that failed is retried, and the
			//    stream goes on.
			ns.on.Store(false)
			var retried []rec
			if tt.retry != nil {
				retried = tt.retry(t, s)
			} else {
				rest := small[20+len(taken):]
				appendAll(t, s, rest, 0)
				retried = rest
			}
			more := makeRecs(30, s.lastLSN+1, fixedSize(50))
			appendAll(t, s, more, 7)
			syncT(t, s)
			all := append(append(append(append([]rec(nil), durable...), taken...), retried...), more...)
			checkRecs(t, readAvailable(t, before), all[len(durable):])
			checkDisk(t, s, dir, all)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, tt.segSize)
			checkRecs(t, drain(t, s, 0), all)
		})
	}
}
