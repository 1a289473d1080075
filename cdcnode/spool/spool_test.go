package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		segSize   int64
		n         int
		size      func(i int) int
		syncEvery int
		minSegs   int
	}{
		{name: "one segment", n: 500, size: fixedSize(40), syncEvery: 50, minSegs: 1},
		{name: "a segment per LSN", segSize: 1, n: 200, size: fixedSize(10), syncEvery: 7, minSegs: 100},
		{name: "small segments", segSize: 512, n: 600, size: func(i int) int { return i % 100 }, syncEvery: 13, minSegs: 20},
		{name: "empty payloads", segSize: 256, n: 300, size: fixedSize(0), syncEvery: 1, minSegs: 5},
		{name: "sync once", segSize: 4096, n: 1000, size: func(i int) int { return i % 300 }, minSegs: 20},
		{name: "payloads past the buffer and the read window", segSize: 1 << 20, n: 60,
			size: func(i int) int {
				if i%5 == 0 {
					return 300<<10 + i
				}
				return i
			}, syncEvery: 3, minSegs: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, tt.segSize)
			recs := makeRecs(tt.n, 0x16_B374D848, tt.size)
			appendAll(t, s, recs, tt.syncEvery)
			syncT(t, s)

			if got, want := s.Durable(), recs[len(recs)-1].lsn; got != want {
				t.Fatalf("Durable() = %s, want %s", formatLSN(got), formatLSN(want))
			}
			if n := len(segFiles(t, dir)); n < tt.minSegs {
				t.Fatalf("%d segments, want at least %d", n, tt.minSegs)
			}
			checkDisk(t, s, dir, recs)
			checkRecs(t, drain(t, s, 0), recs)

			// Reading from any LSN starts at the first record at or past it,
			// also where records sharing that LSN began in the segment before.
			for _, i := range []int{1, len(recs) / 3, len(recs) / 2, len(recs) - 1} {
				lsn := recs[i].lsn
				checkRecs(t, drain(t, s, lsn), from(recs, lsn))
				checkRecs(t, drain(t, s, lsn+1), from(recs, lsn+1))
			}
			if got := drain(t, s, recs[len(recs)-1].lsn+1); len(got) != 0 {
				t.Fatalf("read %d records past the last LSN", len(got))
			}
		})
	}
}

// A segment rolls over only at a greater LSN, so records sharing an LSN can
// straddle two segments; a reader from that LSN must start in the first.
func TestReaderFromLSNSharedAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	p := []byte("0123456789")
	// The first segment is full after its second record.
	s := openT(t, dir, hdrSize+10+hdrSize+1)
	recs := []rec{{10, p}, {20, []byte("b")}, {20, []byte("c")}, {20, []byte("d")}, {20, []byte("e")}, {30, p}}
	appendAll(t, s, recs, 0)
	syncT(t, s)

	files := segFiles(t, dir)
	if len(files) != 3 || filepath.Base(files[1]) != segmentFile(20) {
		t.Fatalf("segments %v: want three, the second named for LSN 20", files)
	}
	checkDisk(t, s, dir, recs)
	checkRecs(t, drain(t, s, 20), recs[1:])
	checkRecs(t, drain(t, s, 11), recs[1:])
	checkRecs(t, drain(t, s, 21), recs[5:])
}

func TestReaderFollowsTail(t *testing.T) {
	s := openT(t, t.TempDir(), 64)
	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// 1. Appended is not durable: nothing to read yet.
	if err := s.Append(100, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if got := readAvailable(t, r); len(got) != 0 {
		t.Fatalf("read %d records that were never synced", len(got))
	}

	// 2. A reader blocked at the tail wakes on Sync, and only then.
	type result struct {
		r   rec
		err error
	}
	got := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventually)
		defer cancel()
		rc, err := r.Next(ctx)
		got <- result{rec{rc.LSN, append([]byte(nil), rc.Payload...)}, err}
	})
	waitWaiting(t, s, 1)
	select {
	case res := <-got:
		t.Fatalf("Next returned before Sync: %+v", res)
	default:
	}
	syncT(t, s)
	wg.Wait()
	if res := <-got; res.err != nil || res.r.lsn != 100 || string(res.r.payload) != "a" {
		t.Fatalf("Next after Sync: %+v", res)
	}

	// 3. Across rollovers, with every record synced one by one.
	for lsn := uint64(101); lsn < 150; lsn++ {
		if err := s.Append(lsn, []byte("some bytes")); err != nil {
			t.Fatal(err)
		}
		syncT(t, s)
		if rc := next(t, r); rc.lsn != lsn {
			t.Fatalf("got LSN %d, want %d", rc.lsn, lsn)
		}
	}

	// 4. A cancelled ctx ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		_, err := r.Next(ctx)
		got <- result{err: err}
	})
	waitWaiting(t, s, 1)
	cancel()
	wg.Wait()
	if res := <-got; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", res.err)
	}

	// 5. Close ends the wait too.
	wg.Go(func() {
		_, err := r.Next(context.Background())
		got <- result{err: err}
	})
	waitWaiting(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if res := <-got; !errors.Is(res.err, ErrClosed) {
		t.Fatalf("Next after Close: %v", res.err)
	}
}

func TestConcurrentReaders(t *testing.T) {
	s := openT(t, t.TempDir(), 300)
	recs := makeRecs(3000, 1<<32, func(i int) int { return i % 70 })
	const readers = 3
	var wg sync.WaitGroup
	results := make([][]rec, readers)
	errs := make([]error, readers)
	for k := range readers {
		r, err := s.Reader(0)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer r.Close()
			ctx, cancel := context.WithTimeout(context.Background(), eventually)
			defer cancel()
			for len(results[k]) < len(recs) {
				got, err := r.Next(ctx)
				if err != nil {
					errs[k] = err
					return
				}
				results[k] = append(results[k], rec{got.LSN, append([]byte(nil), got.Payload...)})
			}
		})
	}
	for i, r := range recs {
		if err := s.Append(r.lsn, r.payload); err != nil {
			t.Fatal(err)
		}
		if i%11 == 0 {
			syncT(t, s)
		}
	}
	syncT(t, s)
	wg.Wait()
	for k := range readers {
		if errs[k] != nil {
			t.Fatalf("reader %d: %v", k, errs[k])
		}
		checkRecs(t, results[k], recs)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	recs := makeRecs(390, 0x2_0000_0000, func(i int) int { return 1 + i%50 })
	s, err := Open(dir, Options{SegmentSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, recs[:300], 17)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	// Close syncs what is still buffered.
	appendAll(t, s, recs[300:], 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	bytesBefore := s.Bytes()
	if bytesBefore != diskSize(recs) {
		t.Fatalf("Bytes() after Close = %d, want %d", bytesBefore, diskSize(recs))
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Append(recs[len(recs)-1].lsn+1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := s.Reader(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reader after Close: %v", err)
	}

	s = openT(t, dir, 1000)
	if s.Durable() != recs[len(recs)-1].lsn || s.Bytes() != bytesBefore {
		t.Fatalf("after reopen: Durable %s, Bytes %d; want %s, %d", formatLSN(s.Durable()), s.Bytes(), formatLSN(recs[len(recs)-1].lsn), bytesBefore)
	}
	checkRecs(t, drain(t, s, 0), recs)

	// Appending goes on where it stopped, in the same last segment.
	filesBefore := segFiles(t, dir)
	more := makeRecs(100, recs[len(recs)-1].lsn+1, fixedSize(3))
	if err := s.Append(more[0].lsn, more[0].payload); err != nil {
		t.Fatal(err)
	}
	syncT(t, s)
	fi, err := os.Stat(filesBefore[len(filesBefore)-1])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() >= 1000 {
		t.Fatalf("test setup: the last segment is full (%d bytes)", fi.Size())
	}
	if files := segFiles(t, dir); len(files) != len(filesBefore) {
		t.Fatalf("the first append after reopen started a new segment: %v", files[len(filesBefore):])
	}
	appendAll(t, s, more[1:], 9)
	all := append(append([]rec(nil), recs...), more...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, 1000)
	checkDisk(t, s, dir, all)
	checkRecs(t, drain(t, s, 0), all)
}

func TestOpenRecoversTornTail(t *testing.T) {
	type layout struct {
		last     string  // path of the last segment
		offs     []int64 // offsets of its records
		lastLSN  uint64
		lastSize int64 // size of the last segment
	}
	flip := func(t *testing.T, path string, off int64) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[off] ^= 0x40
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	appendTo := func(t *testing.T, path string, b []byte) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	lastOff := func(l layout) int64 { return l.offs[len(l.offs)-1] }
	tests := []struct {
		name     string
		lastOne  bool // the last segment holds a single record
		damage   func(t *testing.T, dir string, l layout)
		dropLast bool // the last record is lost
	}{
		{name: "cut inside the last header", dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			os.Truncate(l.last, lastOff(l)+7)
		}},
		{name: "cut inside the last payload", dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			os.Truncate(l.last, lastOff(l)+hdrSize+3)
		}},
		{name: "CRC byte flipped in the last record", dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			flip(t, l.last, lastOff(l)+13)
		}},
		{name: "payload byte flipped in the last record", dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			flip(t, l.last, l.lastSize-1)
		}},
		{name: "length of the last record grown", dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			flip(t, l.last, lastOff(l)+2)
		}},
		{name: "zeros after the last record", damage: func(t *testing.T, _ string, l layout) {
			appendTo(t, l.last, make([]byte, 8192))
		}},
		{name: "garbage after the last record", damage: func(t *testing.T, _ string, l layout) {
			appendTo(t, l.last, []byte("\x00\x00\x00\x05garbage that is not a record"))
		}},
		{name: "an empty segment created before the crash", damage: func(t *testing.T, dir string, l layout) {
			appendTo(t, segmentPath(dir, l.lastLSN+10), nil)
		}},
		{name: "a segment holding only a torn record", damage: func(t *testing.T, dir string, l layout) {
			appendTo(t, segmentPath(dir, l.lastLSN+10), []byte("\x00\x00\x01\x00\x00\x00"))
		}},
		{name: "the only record of the last segment torn", lastOne: true, dropLast: true, damage: func(t *testing.T, _ string, l layout) {
			os.Truncate(l.last, 5)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			recs := makeRecs(50, 5000, func(i int) int { return 20 + i })
			if tt.lastOne {
				recs = append(recs, rec{recs[len(recs)-1].lsn + 1, []byte("alone")})
			}
			s, err := Open(dir, Options{SegmentSize: 400})
			if err != nil {
				t.Fatal(err)
			}
			appendAll(t, s, recs[:len(recs)-1], 0)
			syncT(t, s)
			if tt.lastOne {
				// Fill the segment so the last record starts a new one.
				s.opts.SegmentSize = 1
			}
			appendAll(t, s, recs[len(recs)-1:], 0)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			l := layout{last: files[len(files)-1], lastLSN: recs[len(recs)-1].lsn}
			l.offs, _ = fileRecords(t, l.last)
			fi, _ := os.Stat(l.last)
			l.lastSize = fi.Size()
			if tt.lastOne && len(l.offs) != 1 {
				t.Fatalf("the last segment holds %d records, want 1", len(l.offs))
			}

			tt.damage(t, dir, l)

			want := recs
			if tt.dropLast {
				want = recs[:len(recs)-1]
			}
			s = openT(t, dir, 400)
			checkDisk(t, s, dir, want)
			checkRecs(t, drain(t, s, 0), want)
			if got := s.Durable(); got != want[len(want)-1].lsn {
				t.Fatalf("Durable() = %s, want %s", formatLSN(got), formatLSN(want[len(want)-1].lsn))
			}

			// The stream resumes from Durable, and the spool takes it.
			more := makeRecs(20, want[len(want)-1].lsn+1, fixedSize(30))
			appendAll(t, s, more, 4)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			all := append(append([]rec(nil), want...), more...)
			s = openT(t, dir, 400)
			checkDisk(t, s, dir, all)
			checkRecs(t, drain(t, s, 0), all)
		})
	}
}

func TestOpenRejectsCorruptSegment(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, offs []int64) int64 // returns the offset Open must name
		reason string
	}{
		{name: "payload byte flipped", reason: "CRC mismatch", damage: func(t *testing.T, path string, offs []int64) int64 {
			b, _ := os.ReadFile(path)
			b[offs[2]+hdrSize+1] ^= 1
			os.WriteFile(path, b, 0o640)
			return offs[2]
		}},
		{name: "LSN byte flipped", reason: "CRC mismatch", damage: func(t *testing.T, path string, offs []int64) int64 {
			b, _ := os.ReadFile(path)
			b[offs[1]+11] ^= 1
			os.WriteFile(path, b, 0o640)
			return offs[1]
		}},
		{name: "record length zeroed", reason: "", damage: func(t *testing.T, path string, offs []int64) int64 {
			b, _ := os.ReadFile(path)
			copy(b[offs[1]:], []byte{0, 0, 0, 0})
			os.WriteFile(path, b, 0o640)
			return offs[1]
		}},
		{name: "cut inside a record", reason: "past the end", damage: func(t *testing.T, path string, offs []int64) int64 {
			os.Truncate(path, offs[len(offs)-1]+hdrSize+1)
			return offs[len(offs)-1]
		}},
		{name: "emptied", reason: "no records", damage: func(t *testing.T, path string, offs []int64) int64 {
			os.Truncate(path, 0)
			return 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{SegmentSize: 600})
			if err != nil {
				t.Fatal(err)
			}
			appendAll(t, s, makeRecs(100, 1000, fixedSize(40)), 0)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) < 3 {
				t.Fatalf("%d segments, want 3 or more", len(files))
			}
			victim := files[1]
			offs, _ := fileRecords(t, victim)
			wantOff := tt.damage(t, victim, offs)

			_, err = Open(dir, Options{SegmentSize: 600})
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("Open: %v, want a *CorruptError", err)
			}
			if ce.Path != victim || ce.Offset != wantOff {
				t.Fatalf("Open names %s at offset %d, want %s at %d", ce.Path, ce.Offset, victim, wantOff)
			}
			mustContain(t, err, victim)
			mustContain(t, err, tt.reason)
			// Open left nothing locked or repaired behind it.
			if got := segFiles(t, dir); len(got) != len(files) {
				t.Fatalf("Open changed the segments: %v", got)
			}
			if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("second Open: %v", err)
			}
		})
	}
}

// A durable record damaged on disk after Open is caught by the reader.
func TestReaderDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 1<<20)
	recs := makeRecs(10, 77, fixedSize(100))
	appendAll(t, s, recs, 0)
	syncT(t, s)
	path := segFiles(t, dir)[0]
	offs, _ := fileRecords(t, path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), offs[4]+hdrSize+50); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range 4 {
		if got := next(t, r); got.lsn != recs[i].lsn {
			t.Fatalf("record %d: LSN %d", i, got.lsn)
		}
	}
	_, err = r.Next(context.Background())
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != path || ce.Offset != offs[4] {
		t.Fatalf("Next: %v, want a *CorruptError for %s at %d", err, path, offs[4])
	}
}

func TestTruncate(t *testing.T) {
	recs := makeRecs(300, 0x7_0000_0000, func(i int) int { return 10 + i%40 })
	// Find the record layout the tests cut at: records per segment, with a
	// segment size that gives several.
	const segSize = 700
	var bounds []int // index of the first record of each segment
	{
		dir := t.TempDir()
		s := openT(t, dir, segSize)
		appendAll(t, s, recs, 0)
		syncT(t, s)
		n := 0
		for _, path := range segFiles(t, dir) {
			bounds = append(bounds, n)
			_, l := fileRecords(t, path)
			n += len(l)
		}
		if len(bounds) < 6 {
			t.Fatalf("%d segments, want 6 or more", len(bounds))
		}
		s.Close()
	}
	mid := func(seg int) uint64 { return recs[(bounds[seg]+bounds[seg+1])/2].lsn }
	tests := []struct {
		name     string
		after    uint64
		unsynced int // records at the end appended but not synced
	}{
		{name: "inside the last segment", after: mid(len(bounds) - 2)},
		{name: "inside an earlier segment", after: mid(2)},
		{name: "at the end of a segment", after: recs[bounds[3]-1].lsn},
		{name: "at the start of a segment", after: recs[bounds[3]].lsn},
		{name: "inside the first segment", after: mid(0)},
		{name: "before every record", after: recs[0].lsn - 1},
		{name: "past every record", after: recs[len(recs)-1].lsn},
		{name: "with an unsynced tail", after: mid(len(bounds) - 3), unsynced: 40},
		{name: "inside the unsynced tail", after: recs[len(recs)-10].lsn, unsynced: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, segSize)
			appendAll(t, s, recs[:len(recs)-tt.unsynced], 0)
			syncT(t, s)
			appendAll(t, s, recs[len(recs)-tt.unsynced:], 0)

			if err := s.Truncate(tt.after); err != nil {
				t.Fatal(err)
			}
			kept := upTo(recs, tt.after)
			checkDisk(t, s, dir, kept)
			checkRecs(t, drain(t, s, 0), kept)
			var wantDurable uint64
			if len(kept) > 0 {
				wantDurable = kept[len(kept)-1].lsn
			}
			if s.Durable() != wantDurable {
				t.Fatalf("Durable() = %s, want %s", formatLSN(s.Durable()), formatLSN(wantDurable))
			}

			// The stream restarts after the cut.
			more := makeRecs(60, tt.after+1, fixedSize(25))
			appendAll(t, s, more, 8)
			syncT(t, s)
			all := append(append([]rec(nil), kept...), more...)
			checkDisk(t, s, dir, all)
			checkRecs(t, drain(t, s, 0), all)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, segSize)
			checkRecs(t, drain(t, s, 0), all)
		})
	}
}

func TestTruncateUnderReaders(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 200)
	recs := makeRecs(100, 1000, fixedSize(20))
	appendAll(t, s, recs, 0)
	syncT(t, s)
	cutAt := 60 // records [cutAt:] go
	for recs[cutAt].lsn == recs[cutAt-1].lsn {
		cutAt++
	}
	after := recs[cutAt-1].lsn
	more := makeRecs(30, recs[len(recs)-1].lsn+1, fixedSize(5))

	behind, _ := s.Reader(0)  // has read less than what stays
	atCut, _ := s.Reader(0)   // has read exactly what stays
	past, _ := s.Reader(0)    // has read past the cut
	skipped, _ := s.Reader(0) // from past everything: has skipped past the cut, read nothing
	for _, r := range []*Reader{behind, atCut, past, skipped} {
		defer r.Close()
	}
	skipped.from = more[10].lsn
	for range 30 {
		next(t, behind)
	}
	for range cutAt {
		next(t, atCut)
	}
	for range cutAt + 10 {
		next(t, past)
	}
	if got := readAvailable(t, skipped); len(got) != 0 {
		t.Fatalf("the reader from past the end read %d records", len(got))
	}

	if err := s.Truncate(after); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, more, 0)
	syncT(t, s)

	checkRecs(t, readAvailable(t, behind), append(append([]rec(nil), recs[30:cutAt]...), more...))
	checkRecs(t, readAvailable(t, atCut), more)
	checkRecs(t, readAvailable(t, skipped), from(more, skipped.from))
	_, err := past.Next(context.Background())
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("the reader past the cut: %v, want ErrTruncated", err)
	}
}

func TestRemove(t *testing.T) {
	recs := makeRecs(200, 0x1_0000, fixedSize(30))
	const segSize = 500
	tests := []struct {
		name  string
		upTo  func(segLast []uint64) uint64
		gone  int // segments removed
		isAll bool
	}{
		{name: "below the first segment's end", upTo: func(l []uint64) uint64 { return l[0] - 1 }, gone: 0},
		{name: "at the end of the second segment", upTo: func(l []uint64) uint64 { return l[1] }, gone: 2},
		{name: "inside the fourth segment", upTo: func(l []uint64) uint64 { return l[3] - 1 }, gone: 3},
		{name: "past everything", upTo: func(l []uint64) uint64 { return l[len(l)-1] + 100 }, isAll: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, segSize)
			appendAll(t, s, recs, 0)
			syncT(t, s)
			files := segFiles(t, dir)
			var segLast []uint64
			var counts []int
			for _, path := range files {
				_, l := fileRecords(t, path)
				segLast = append(segLast, l[len(l)-1])
				counts = append(counts, len(l))
			}
			gone := tt.gone
			if tt.isAll {
				gone = len(files) - 1 // never the one being written
			}
			nGone := 0
			for _, c := range counts[:gone] {
				nGone += c
			}

			// Readers: one in the middle of the first segment, one at the
			// end of what goes, one at the start of the data.
			inside, _ := s.Reader(0)
			atEnd, _ := s.Reader(0)
			defer inside.Close()
			defer atEnd.Close()
			next(t, inside)
			for range nGone {
				next(t, atEnd)
			}

			if err := s.Remove(tt.upTo(segLast)); err != nil {
				t.Fatal(err)
			}
			if got := segFiles(t, dir); len(got) != len(files)-gone {
				t.Fatalf("%d segments left, want %d", len(got), len(files)-gone)
			}
			kept := recs[nGone:]
			checkDisk(t, s, dir, kept)
			checkRecs(t, drain(t, s, 0), kept)
			checkRecs(t, readAvailable(t, atEnd), kept)
			if gone > 0 {
				_, err := inside.Next(context.Background())
				if !errors.Is(err, ErrSegmentRemoved) {
					t.Fatalf("reader inside a removed segment: %v", err)
				}
				mustContain(t, err, filepath.Base(files[0]))
			} else {
				checkRecs(t, readAvailable(t, inside), recs[1:])
			}

			// Writing and reading go on; a reopen finds what is left.
			more := makeRecs(40, recs[len(recs)-1].lsn+1, fixedSize(30))
			r, _ := s.Reader(0)
			defer r.Close()
			appendAll(t, s, more, 5)
			syncT(t, s)
			all := append(append([]rec(nil), kept...), more...)
			checkRecs(t, readAvailable(t, r), all)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, segSize)
			checkDisk(t, s, dir, all)
			checkRecs(t, drain(t, s, 0), all)
		})
	}
}

func TestAppendRejects(t *testing.T) {
	s := openT(t, t.TempDir(), 0)
	if err := s.Append(0, []byte("x")); err == nil {
		t.Fatal("Append at LSN 0 succeeded")
	}
	if err := s.Append(200, []byte("x")); err != nil {
		t.Fatal(err)
	}
	err := s.Append(199, []byte("x"))
	mustContain(t, err, "stream order")
	if err := s.Append(200, []byte("same LSN")); err != nil {
		t.Fatalf("a second record at the same LSN: %v", err)
	}
}

func TestOpen(t *testing.T) {
	t.Run("one spool per directory", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, 0)
		if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second Open: %v", err)
		}
		s.Close()
		openT(t, dir, 0)
	})
	t.Run("creates the directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "spool")
		s := openT(t, dir, 0)
		if s.Durable() != 0 || s.Bytes() != 0 {
			t.Fatalf("new spool: Durable %d, Bytes %d", s.Durable(), s.Bytes())
		}
	})
	t.Run("refuses a stray segment name", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "00000000000000ab.seg"), nil, 0o640)
		_, err := Open(dir, Options{})
		mustContain(t, err, "00000000000000ab.seg")
	})
	t.Run("ignores other files", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o640)
		openT(t, dir, 0)
	})
	t.Run("refuses a negative segment size", func(t *testing.T) {
		if _, err := Open(t.TempDir(), Options{SegmentSize: -1}); err == nil {
			t.Fatal("Open with SegmentSize -1 succeeded")
		}
	})
}

// A payload of several megabytes goes past the write buffer and the read
// window, straight to and from the file.
func TestLargePayload(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 1<<20)
	big := make([]byte, 9<<20)
	for i := range big {
		big[i] = byte(i * 13)
	}
	recs := []rec{{1, []byte("before")}, {2, big}, {3, []byte("after")}, {4, big[:readWindow-hdrSize]}, {5, big[:readWindow-hdrSize+1]}}
	appendAll(t, s, recs, 0)
	syncT(t, s)
	checkDisk(t, s, dir, recs)
	checkRecs(t, drain(t, s, 0), recs)
	checkRecs(t, drain(t, s, 2), recs[1:])
}

// A reader that would have skipped what Remove deleted does not fail for it.
func TestRemoveBeforeReaderFrom(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 500)
	recs := makeRecs(100, 0x9000, fixedSize(30))
	appendAll(t, s, recs, 0)
	syncT(t, s)
	files := segFiles(t, dir)
	_, first := fileRecords(t, files[0])
	_, second := fileRecords(t, files[1])
	// From just past the first segment: the reader starts in it, skipping.
	fromLSN := first[len(first)-1] + 1
	if fromLSN > second[0] {
		t.Fatal("test setup: the segments share an LSN")
	}
	r, err := s.Reader(fromLSN)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := s.Remove(first[len(first)-1]); err != nil {
		t.Fatal(err)
	}
	checkRecs(t, readAvailable(t, r), from(recs, fromLSN))
}

// Readers racing a Truncate either end up with exactly what stays plus what
// comes after, or, if they had returned a dropped record, get ErrTruncated.
func TestTruncateRacingReaders(t *testing.T) {
	for round := range 20 {
		s := openT(t, t.TempDir(), 400)
		recs := makeRecs(300, 0x100, func(i int) int { return i % 90 })
		cut := 150
		for recs[cut].lsn == recs[cut-1].lsn {
			cut++
		}
		after := recs[cut-1].lsn
		kept := recs[:cut]
		more := makeRecs(50, recs[len(recs)-1].lsn+1, fixedSize(7))
		want := append(append([]rec(nil), kept...), more...)

		appendAll(t, s, recs, 0)
		syncT(t, s)
		const readers = 4
		got := make([][]rec, readers)
		errs := make([]error, readers)
		var wg sync.WaitGroup
		rs := make([]*Reader, readers)
		for k := range readers {
			r, err := s.Reader(0)
			if err != nil {
				t.Fatal(err)
			}
			rs[k] = r
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), eventually)
				defer cancel()
				for len(got[k]) < len(want) {
					rc, err := r.Next(ctx)
					if err != nil {
						errs[k] = err
						return
					}
					got[k] = append(got[k], rec{rc.LSN, append([]byte(nil), rc.Payload...)})
				}
			})
		}
		if err := s.Truncate(after); err != nil {
			t.Fatal(err)
		}
		appendAll(t, s, more, 10)
		syncT(t, s)
		wg.Wait()
		for k := range readers {
			if errs[k] == nil && len(got[k]) > cut && got[k][cut].lsn != more[0].lsn {
				// It read records the Truncate removed, all before the
				// Truncate: the next read must say what happened.
				ctx, cancel := context.WithTimeout(context.Background(), eventually)
				_, errs[k] = rs[k].Next(ctx)
				cancel()
			}
			rs[k].Close()
			if errs[k] == nil {
				checkRecs(t, got[k], want)
				continue
			}
			if !errors.Is(errs[k], ErrTruncated) {
				t.Fatalf("round %d, reader %d: %v", round, k, errs[k])
			}
			n := len(got[k])
			if n <= cut || n > len(recs) {
				t.Fatalf("round %d, reader %d: ErrTruncated after %d records; the cut is at %d", round, k, n, cut)
			}
			checkRecs(t, got[k], recs[:n])
		}
		s.Close()
	}
}
