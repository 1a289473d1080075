package spool

import (
	"errors"
	"os"
	"testing"
)

// FuzzOpenTail writes valid records, then arbitrary bytes after them (at the
// end of the last segment, or as a new last segment), as a crash in the
// middle of a write can leave them. Open must keep every valid record, keep
// the files and Bytes in agreement with what it reads back, and leave a
// spool that takes appends and reopens to the same records.
func FuzzOpenTail(f *testing.F) {
	f.Add(uint8(5), uint8(3), []byte{}, false)
	f.Add(uint8(1), uint8(0), []byte{0, 0, 0, 1}, false)
	f.Add(uint8(20), uint8(40), []byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x10\x00\xde\xad\xbe\xefabcd"), false)
	f.Add(uint8(9), uint8(7), make([]byte, 100), true)
	f.Add(uint8(3), uint8(200), []byte("\xff\xff\xff\xff garbage"), true)
	f.Fuzz(func(t *testing.T, n, size uint8, garbage []byte, newSegment bool) {
		dir := t.TempDir()
		const segSize = 300
		valid := makeRecs(1+int(n)%40, 0x10_0000, func(i int) int { return (int(size) + i*13) % 257 })
		s, err := Open(dir, Options{SegmentSize: segSize})
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, s, valid, 0)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		files := segFiles(t, dir)
		last := files[len(files)-1]
		lastLSN := valid[len(valid)-1].lsn
		if newSegment {
			last = segmentPath(dir, lastLSN+1)
		}
		fd, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fd.Write(garbage); err != nil {
			t.Fatal(err)
		}
		fd.Close()

		rs, err := Open(dir, Options{SegmentSize: segSize})
		if err != nil {
			// Only a new segment whose garbage holds an intact record at
			// an LSN other than its name's may be refused.
			var ce *CorruptError
			if newSegment && errors.As(err, &ce) && ce.Path == last && ce.Offset == 0 {
				return
			}
			t.Fatalf("Open: %v", err)
		}
		defer rs.Close()
		got := drain(t, rs, 0)
		if len(got) < len(valid) {
			t.Fatalf("Open kept %d records of the %d valid ones", len(got), len(valid))
		}
		checkRecs(t, got[:len(valid)], valid)
		// Garbage that happens to hold intact records keeps them.
		for _, r := range got[len(valid):] {
			if r.lsn < lastLSN {
				t.Fatalf("a record from the garbage has LSN %s, below %s", formatLSN(r.lsn), formatLSN(lastLSN))
			}
		}
		checkDisk(t, rs, dir, got)
		if rs.Durable() != got[len(got)-1].lsn {
			t.Fatalf("Durable() = %s, want %s", formatLSN(rs.Durable()), formatLSN(got[len(got)-1].lsn))
		}

		next := rec{got[len(got)-1].lsn + 1, []byte("after recovery")}
		appendAll(t, rs, []rec{next}, 0)
		if err := rs.Close(); err != nil {
			t.Fatal(err)
		}
		want := append(got, next)
		s2, err := Open(dir, Options{SegmentSize: segSize})
		if err != nil {
			t.Fatalf("Open after recovery: %v", err)
		}
		defer s2.Close()
		checkRecs(t, drain(t, s2, 0), want)
		checkDisk(t, s2, dir, want)
	})
}
