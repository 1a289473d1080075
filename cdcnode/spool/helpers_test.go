package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventually bounds a wait for something that must happen soon. It is a
// bound on a hang, not a timing assertion.
const eventually = 10 * time.Second

type rec struct {
	lsn     uint64
	payload []byte
}

// makeRecs returns n records whose LSNs start at first and grow, one in four
// sharing the LSN of the one before (as a Relation message and its change
// do), with payload sizes from size.
func makeRecs(n int, first uint64, size func(i int) int) []rec {
	rng := rand.New(rand.NewPCG(uint64(n), first))
	out := make([]rec, n)
	lsn := first
	for i := range out {
		if i > 0 && rng.IntN(4) != 0 {
			lsn += 1 + rng.Uint64N(300)
		}
		p := make([]byte, size(i))
		for j := range p {
			p[j] = byte(i*31 + j*7)
		}
		out[i] = rec{lsn: lsn, payload: p}
	}
	return out
}

func fixedSize(n int) func(int) int { return func(int) int { return n } }

func openT(t *testing.T, dir string, segSize int64) *Spool {
	t.Helper()
	s, err := Open(dir, Options{SegmentSize: segSize})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// appendAll appends recs, syncing after every syncEvery records (never if
// 0).
func appendAll(t *testing.T, s *Spool, recs []rec, syncEvery int) {
	t.Helper()
	for i, r := range recs {
		if err := s.Append(r.lsn, r.payload); err != nil {
			t.Fatalf("Append #%d at %s: %v", i, formatLSN(r.lsn), err)
		}
		if syncEvery > 0 && (i+1)%syncEvery == 0 {
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
		}
	}
}

func syncT(t *testing.T, s *Spool) {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// drain returns every durable record with LSN >= from, without waiting.
func drain(t *testing.T, s *Spool, from uint64) []rec {
	t.Helper()
	r, err := s.Reader(from)
	if err != nil {
		t.Fatalf("Reader(%s): %v", formatLSN(from), err)
	}
	defer r.Close()
	return readAvailable(t, r)
}

// readAvailable returns what r has without waiting.
func readAvailable(t *testing.T, r *Reader) []rec {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []rec
	for {
		got, err := r.Next(ctx)
		if errors.Is(err, context.Canceled) {
			return out
		}
		if err != nil {
			t.Fatalf("Next after %d records: %v", len(out), err)
		}
		out = append(out, rec{lsn: got.LSN, payload: bytes.Clone(got.Payload)})
	}
}

// next reads one record, waiting at most eventually.
func next(t *testing.T, r *Reader) rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	got, err := r.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return rec{lsn: got.LSN, payload: bytes.Clone(got.Payload)}
}

func from(recs []rec, lsn uint64) []rec {
	var out []rec
	for _, r := range recs {
		if r.lsn >= lsn {
			out = append(out, r)
		}
	}
	return out
}

func upTo(recs []rec, lsn uint64) []rec {
	var out []rec
	for _, r := range recs {
		if r.lsn <= lsn {
			out = append(out, r)
		}
	}
	return out
}

func checkRecs(t *testing.T, got, want []rec) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if got[i].lsn != want[i].lsn || !bytes.Equal(got[i].payload, want[i].payload) {
			t.Fatalf("record #%d: got LSN %s with %d bytes, want LSN %s with %d bytes",
				i, formatLSN(got[i].lsn), len(got[i].payload), formatLSN(want[i].lsn), len(want[i].payload))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
}

func diskSize(recs []rec) int64 {
	var n int64
	for _, r := range recs {
		n += hdrSize + int64(len(r.payload))
	}
	return n
}

// segFiles returns the segment files in dir, in order.
func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segExt))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// fileRecords parses a segment file as the format says, trusting it, and
// returns each record's offset and LSN.
func fileRecords(t *testing.T, path string) (offs []int64, lsns []uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+hdrSize <= len(b); {
		n := int(binary.BigEndian.Uint32(b[off:]))
		offs = append(offs, int64(off))
		lsns = append(lsns, binary.BigEndian.Uint64(b[off+4:]))
		off += hdrSize + n
	}
	return offs, lsns
}

// checkDisk checks that the files in dir hold exactly want, each named for
// its first record, and that Bytes agrees.
func checkDisk(t *testing.T, s *Spool, dir string, want []rec) {
	t.Helper()
	var total int64
	var lsns []uint64
	for _, path := range segFiles(t, dir) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		_, l := fileRecords(t, path)
		if len(l) == 0 {
			t.Fatalf("%s holds no records", path)
		}
		if name := segmentFile(l[0]); filepath.Base(path) != name {
			t.Fatalf("%s starts with LSN %s: want the name %s", path, formatLSN(l[0]), name)
		}
		lsns = append(lsns, l...)
	}
	if want := diskSize(want); total != want {
		t.Fatalf("segment files hold %d bytes, want %d", total, want)
	}
	if s != nil && s.Bytes() != total {
		t.Fatalf("Bytes() = %d, files hold %d", s.Bytes(), total)
	}
	if len(lsns) != len(want) {
		t.Fatalf("segment files hold %d records, want %d", len(lsns), len(want))
	}
	for i, l := range lsns {
		if l != want[i].lsn {
			t.Fatalf("record #%d on disk has LSN %s, want %s", i, formatLSN(l), formatLSN(want[i].lsn))
		}
	}
}

// waitWaiting waits until n readers are blocked in Next.
func waitWaiting(t *testing.T, s *Spool, n int) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		s.mu.Lock()
		w := s.waiting
		s.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d readers waiting, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// copyDir copies the segment files of src into a new directory, as a crash
// would leave them for the next Open.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, path := range segFiles(t, src) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(path)), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func mustContain(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %v does not mention %q", err, substr)
	}
}
