package spool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// DefaultSegmentSize is the segment size when Options.SegmentSize is zero.
const DefaultSegmentSize = 64 << 20

const (
	writeBufSize = 64 << 10
	maxPayload   = math.MaxUint32
)

// Options configure a Spool.
type Options struct {
	// SegmentSize is the size at which the writer starts a new segment. A
	// segment can exceed it (see the package documentation). Zero means
	// DefaultSegmentSize.
	SegmentSize int64
}

// Spool is a directory of segment files. Append, Sync, Truncate, Remove and
// Close belong to one writer goroutine (they are serialized, but calling
// them from several goroutines makes their order meaningless); Durable,
// Bytes, Reader and every Reader may be used from any goroutine.
//
// Positions are stream offsets: the segments of one Spool value are laid end
// to end, from 0 at the start of the first segment found by Open. Readers
// hold a stream offset, which survives Remove (segments before it go, offsets
// stay) and is moved back by Truncate.
type Spool struct {
	dir  string
	opts Options
	lock *os.File

	// writeAt writes segment files; tests replace it to inject errors.
	writeAt func(f *os.File, p []byte, off int64) (int, error)

	bytes atomic.Int64 // bytes in segment files

	// wmu serializes the writer. The fields below it are the writer's.
	wmu      sync.Mutex
	cur      *segment // the segment being written; nil before the first record of the next one
	f        *os.File // cur's file; nil until its first write
	flushed  int64    // bytes of cur in its file
	buf      []byte   // records of cur not yet written
	curDirty bool     // cur's file was written since its last fsync
	dirDirty bool     // a segment was created since the last fsync of dir
	wEnd     int64    // stream offset of the next record
	lastLSN  uint64   // LSN of the last record appended
	wclosed  bool
	fail     error // set by a failed fsync: every writer call returns it

	// mu guards what readers see. The writer changes these fields only
	// under mu, so it may read them without it.
	mu          sync.Mutex
	segs        []*segment // the segment files, in order
	npub        int        // readers see segs[:npub]
	pubEnd      int64      // stream offset where the published data ends
	durableLSN  uint64
	gen         uint64       // counts Truncate calls that cut something
	truncs      []truncation // what each of them cut, for readers behind on gen
	removedEnd  int64        // stream offset where the last segment Remove deleted ended
	removedPath string       // its file
	removedLast uint64       // and the LSN of its last record
	closed      bool
	notify      chan struct{} // closed and replaced whenever readers should look again
	waiting     int           // readers blocked in Next; tests wait on it
}

// truncation is one Truncate, as readers need to learn of it.
type truncation struct {
	gen   uint64
	cut   int64  // stream offset of the first byte dropped
	after uint64 // records with LSN > after were dropped
}

// Open opens the spool in dir, creating dir if needed. It reads every
// segment and checks every record: a last segment that ends in a record that
// is not intact (a crash during a write) is cut back to its intact records,
// which is not an error; a record that is not intact in any other segment is
// a *CorruptError naming the file and the offset. Everything Open keeps is
// durable: Durable reports the last record.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentSize < 0 {
		return nil, fmt.Errorf("spool: segment size %d is negative (0 means the default, %d)", opts.SegmentSize, DefaultSegmentSize)
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir:     dir,
		opts:    opts,
		lock:    lock,
		writeAt: (*os.File).WriteAt,
		buf:     make([]byte, 0, writeBufSize),
		notify:  make(chan struct{}),
	}
	if err := s.load(); err != nil {
		if s.f != nil {
			s.f.Close()
		}
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	return s, nil
}

// load reads the segments in dir into s.
func (s *Spool) load() error {
	names, err := segmentNames(s.dir)
	if err != nil {
		return err
	}
	var (
		prev uint64 // LSN of the last record kept
		base int64
	)
	for i, name := range names {
		path := segmentPath(s.dir, name.lsn)
		isLast := i == len(names)-1
		var first, last uint64
		var n int
		end, err := scanFile(path, prev, func(_ int64, lsn uint64) bool {
			if n == 0 {
				first = lsn
			}
			last = lsn
			n++
			return true
		})
		if err != nil {
			var ce *CorruptError
			if !isLast || !errors.As(err, &ce) {
				return err
			}
			// 1. The torn tail of a crash: nothing from here on was durable
			//    when the spool last said so. Cut it off, and make the cut
			//    durable before anything is appended after it.
			if err := truncateFile(path, end); err != nil {
				return fmt.Errorf("spool: cut the torn tail of %s at offset %d: %w", path, end, err)
			}
		}
		if n == 0 {
			if !isLast {
				return &CorruptError{Path: path, Offset: 0, Reason: "segment holds no records"}
			}
			// 2. A segment created just before the crash, with nothing
			//    intact in it.
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("spool: remove empty last segment: %w", err)
			}
			continue
		}
		if first != name.lsn {
			return &CorruptError{Path: path, Offset: 0, Reason: fmt.Sprintf("the first record has LSN %s but the file is named for %s", formatLSN(first), formatLSN(name.lsn))}
		}
		s.segs = append(s.segs, &segment{
			first: first, path: path, base: base,
			size: end, last: last,
			durable: end, durLast: last,
		})
		base += end
		prev = last
	}
	// 3. Continue writing the last segment. A process crash leaves its tail
	//    in the page cache, intact but not yet on disk: fsync it before it
	//    is called durable, and the directory with it.
	if len(s.segs) > 0 {
		cur := s.segs[len(s.segs)-1]
		f, err := os.OpenFile(cur.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("spool: open last segment: %w", err)
		}
		s.cur, s.f, s.flushed = cur, f, cur.size
		if err := f.Sync(); err != nil {
			return fmt.Errorf("spool: fsync %s: %w", cur.path, err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("spool: fsync directory %s: %w", s.dir, err)
	}
	s.npub = len(s.segs)
	s.pubEnd, s.wEnd = base, base
	s.durableLSN, s.lastLSN = prev, prev
	s.bytes.Store(base)
	return nil
}

// Append adds a record. It copies payload into a small buffer, or writes it
// at once if it does not fit; the record becomes durable, and visible to
// readers, at the next Sync. lsn must be non-zero and not below the last
// appended LSN.
//
// On a full disk Append returns a *DiskFullError and the record is not
// appended: nothing of it is on disk, the records before it are still
// buffered, and the same Append can be retried once space is free.
func (s *Spool) Append(lsn uint64, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	switch {
	case lsn == 0:
		return errors.New("spool: append at LSN 0/0, which is not a WAL position")
	case lsn < s.lastLSN:
		return fmt.Errorf("spool: append at LSN %s after %s: records must come in stream order", formatLSN(lsn), formatLSN(s.lastLSN))
	case uint64(len(payload)) > maxPayload:
		return fmt.Errorf("spool: append at LSN %s: a payload of %d bytes is larger than a record can hold (%d)", formatLSN(lsn), len(payload), uint64(maxPayload))
	}
	// 1. Roll over: seal the full segment first, so that every segment but
	//    the last is complete on disk.
	if s.cur != nil && s.cur.size >= s.opts.SegmentSize && lsn > s.cur.first {
		if err := s.seal(); err != nil {
			return err
		}
	}
	// 2. Start the next segment. Its file is created at its first write.
	if s.cur == nil {
		s.cur = &segment{first: lsn, path: segmentPath(s.dir, lsn), base: s.wEnd}
		s.mu.Lock()
		s.segs = append(s.segs, s.cur)
		s.mu.Unlock()
	}
	// 3. Buffer the record, or write it past the buffer if it is large.
	n := hdrSize + len(payload)
	if len(s.buf)+n > cap(s.buf) {
		if err := s.flush(); err != nil {
			s.dropEmpty()
			return err
		}
	}
	if n <= cap(s.buf) {
		s.buf = appendRecord(s.buf, lsn, payload)
	} else if err := s.writeLarge(lsn, payload); err != nil {
		s.dropEmpty()
		return err
	}
	s.cur.size += int64(n)
	s.cur.last = lsn
	s.wEnd += int64(n)
	s.lastLSN = lsn
	return nil
}

// Sync writes the buffer, fsyncs the segment being written (and the
// directory, if a segment was created since the last Sync), and then lets
// readers see every record appended so far. After it returns nil, Durable is
// the LSN of the last record appended.
//
// On a full disk Sync returns a *DiskFullError and nothing becomes durable
// or visible; retry it once space is free.
func (s *Spool) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	return s.sync()
}

func (s *Spool) sync() error {
	if err := s.flush(); err != nil {
		return err
	}
	if s.curDirty {
		if err := s.f.Sync(); err != nil {
			return s.failed("fsync", s.cur.path, err)
		}
		s.curDirty = false
	}
	if s.dirDirty {
		if err := syncDir(s.dir); err != nil {
			return s.failed("fsync directory", s.dir, err)
		}
		s.dirDirty = false
	}
	s.publish()
	return nil
}

// Durable returns the LSN of the last durable record: the last one appended
// before the last successful Sync, or found by Open. It is 0 if the spool
// holds no records.
func (s *Spool) Durable() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durableLSN
}

// Bytes returns the size of all segment files: what the spool takes on disk,
// not counting the write buffer.
func (s *Spool) Bytes() int64 {
	return s.bytes.Load()
}

// Truncate drops every record with an LSN greater than after, buffered or
// durable, across as many segments as that takes, and makes the result
// durable. At a restart the caller passes the LSN of the last complete
// commit, to cut a partial transaction at the tail.
//
// Readers that have not returned any dropped record go on from the new end;
// a reader that has gets ErrTruncated.
func (s *Spool) Truncate(after uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return err
	}
	// 1. Find the cut. Segments from k on start past after and go whole;
	//    segment k-1 keeps its records up to after.
	k := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > after })
	var (
		keep     *segment // segment k-1
		cutOff   int64    // its new size
		lastKept uint64
	)
	if k > 0 {
		keep = s.segs[k-1]
		cutOff, lastKept = keep.size, keep.last
		if keep.last > after {
			var err error
			cutOff, err = scanFile(keep.path, 0, func(_ int64, lsn uint64) bool {
				if lsn > after {
					return false
				}
				lastKept = lsn
				return true
			})
			if err != nil {
				return fmt.Errorf("spool: truncate after %s: %w", formatLSN(after), err)
			}
		}
	}
	if k == len(s.segs) && (keep == nil || cutOff == keep.size) {
		return nil // nothing is past after
	}
	cut := s.wEnd
	if k < len(s.segs) {
		cut = s.segs[k].base
	}
	if keep != nil {
		cut = keep.base + cutOff
	}
	gone := slices.Clone(s.segs[k:])

	// 2. Take the dropped records away from readers before touching a file.
	//    A reader in the middle of reading one sees gen change and reads
	//    again from where it now stands.
	s.mu.Lock()
	s.gen++
	s.truncs = append(s.truncs, truncation{gen: s.gen, cut: cut, after: after})
	for _, seg := range gone {
		seg.removed = true
	}
	clear(s.segs[k:])
	s.segs = s.segs[:k]
	s.npub = min(s.npub, k)
	if keep != nil && s.npub == k && keep.durable > cutOff {
		keep.durable, keep.durLast = cutOff, lastKept
	}
	s.pubEnd = min(s.pubEnd, cut)
	s.durableLSN = 0
	if s.npub > 0 {
		s.durableLSN = s.segs[s.npub-1].durLast
	}
	s.broadcastLocked()
	s.mu.Unlock()

	// 3. Delete whole segments, last first, so that a crash in between
	//    leaves a spool without holes; then cut the one that stays, and
	//    make both durable. Truncate again after such a crash to finish.
	if s.cur != nil && s.cur.removed {
		if s.f != nil {
			s.f.Close()
		}
		s.cur, s.f, s.curDirty = nil, nil, false
	}
	for i := len(gone) - 1; i >= 0; i-- {
		if err := os.Remove(gone[i].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return s.failed("remove", gone[i].path, err)
		}
		s.bytes.Add(-gone[i].size)
	}
	if err := syncDir(s.dir); err != nil {
		return s.failed("fsync directory", s.dir, err)
	}
	s.dirDirty = false
	if keep != nil {
		if s.cur != keep { // keep was sealed: write it again
			f, err := os.OpenFile(keep.path, os.O_RDWR, 0)
			if err != nil {
				return s.failed("open", keep.path, err)
			}
			s.cur, s.f = keep, f
		}
		if err := s.f.Truncate(cutOff); err != nil {
			return s.failed("truncate", keep.path, err)
		}
		if err := s.f.Sync(); err != nil {
			return s.failed("fsync", keep.path, err)
		}
		s.bytes.Add(cutOff - keep.size)
		keep.size, keep.last = cutOff, lastKept
		s.flushed, s.curDirty = cutOff, false
	}
	s.wEnd, s.lastLSN = cut, lastKept

	// 4. Everything kept is durable now: publish it.
	s.publish()
	return nil
}

// Remove deletes the segments, from the first on, whose every record has an
// LSN at or below upTo (the target has applied through upTo). It never
// deletes the last segment, which is the one being written, nor one that
// readers could not see yet. A reader that had not read a deleted segment to
// its end gets ErrSegmentRemoved.
func (s *Spool) Remove(upTo uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	n := 0
	for n < s.npub && n < len(s.segs)-1 && s.segs[n].last <= upTo {
		n++
	}
	if n == 0 {
		return nil
	}
	gone := slices.Clone(s.segs[:n])
	end := gone[n-1].base + gone[n-1].size

	s.mu.Lock()
	for _, seg := range gone {
		seg.removed = true
	}
	s.segs = slices.Delete(s.segs, 0, n)
	s.npub -= n
	s.removedEnd, s.removedPath, s.removedLast = end, gone[n-1].path, gone[n-1].last
	if s.npub == 0 {
		s.pubEnd = max(s.pubEnd, end)
	}
	s.broadcastLocked() // readers still in a deleted segment must hear now
	s.mu.Unlock()

	// A crash before the directory is fsynced brings a segment back; the
	// next Remove deletes it again.
	for _, seg := range gone {
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: remove segment: %w", err)
		}
		s.bytes.Add(-seg.size)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("spool: fsync directory %s: %w", s.dir, err)
	}
	return nil
}

// Close syncs what was appended, closes the files and releases the
// directory. Readers blocked in Next return ErrClosed; Readers must still be
// closed. It returns the error of that last Sync, if any.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return ErrClosed
	}
	s.wclosed = true
	var err error
	if s.fail == nil {
		err = s.sync()
	}
	if s.f != nil {
		if cerr := s.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("spool: close segment: %w", cerr)
		}
		s.f = nil
	}
	s.mu.Lock()
	s.closed = true
	s.broadcastLocked()
	s.mu.Unlock()
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}

func (s *Spool) usable() error {
	if s.wclosed {
		return ErrClosed
	}
	return s.fail
}

// failed makes err sticky: after a failed fsync, or a file operation that
// left the files and the spool's idea of them apart, no later write can be
// trusted to be durable.
func (s *Spool) failed(op, path string, err error) error {
	s.fail = fmt.Errorf("spool: %s %s: %w (the spool is unusable: close it, open it again and restart the stream from its durable LSN)", op, path, err)
	return s.fail
}

// seal ends the current segment: written, fsynced, named durably and
// closed. The next Append starts a new one.
func (s *Spool) seal() error {
	if err := s.flush(); err != nil {
		return err
	}
	if s.curDirty {
		if err := s.f.Sync(); err != nil {
			return s.failed("fsync", s.cur.path, err)
		}
		s.curDirty = false
	}
	// The segment's name must be durable before the next one can be: a
	// crash must never leave a later segment without this one.
	if s.dirDirty {
		if err := syncDir(s.dir); err != nil {
			return s.failed("fsync directory", s.dir, err)
		}
		s.dirDirty = false
	}
	if s.f != nil {
		s.f.Close() // fsynced: nothing left for Close to report
	}
	s.cur, s.f, s.flushed = nil, nil, 0
	return nil
}

// flush writes the buffer to the current segment. If that fails, nothing of
// it stays in the file and the buffer is kept.
func (s *Spool) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if err := s.write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

// writeLarge writes one record straight to the current segment; the buffer
// is empty.
func (s *Spool) writeLarge(lsn uint64, payload []byte) error {
	var h [hdrSize]byte
	putHeader(&h, lsn, payload)
	return s.write(h[:], payload)
}

// write appends bufs to the current segment's file, creating it on the first
// write. If any of it fails, the file is cut back to where it was, so that no
// part of a record is left in it.
func (s *Spool) write(bufs ...[]byte) error {
	if s.f == nil {
		f, err := os.OpenFile(s.cur.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			return s.writeError("create", err)
		}
		s.f, s.flushed, s.dirDirty = f, 0, true
	}
	off := s.flushed
	for _, b := range bufs {
		if _, err := s.writeAt(s.f, b, off); err != nil {
			if terr := s.f.Truncate(s.flushed); terr != nil {
				return s.failed("cut back a failed write to", s.cur.path, errors.Join(err, terr))
			}
			return s.writeError("write", err)
		}
		off += int64(len(b))
	}
	s.bytes.Add(off - s.flushed)
	s.flushed, s.curDirty = off, true
	return nil
}

func (s *Spool) writeError(op string, err error) error {
	if isNoSpace(err) {
		return &DiskFullError{Op: op, Path: s.cur.path, Err: err}
	}
	return fmt.Errorf("spool: %s %s: %w", op, s.cur.path, err)
}

// dropEmpty forgets a segment whose first record could not be appended, so
// that the next Append can start it under another LSN.
func (s *Spool) dropEmpty() {
	if s.cur == nil || s.cur.size > 0 {
		return
	}
	if s.f != nil {
		s.f.Close()
		os.Remove(s.cur.path) // empty; Open removes it too if this fails
		s.f = nil
	}
	s.mu.Lock()
	s.segs = s.segs[:len(s.segs)-1]
	s.mu.Unlock()
	s.cur = nil
}

// publish lets readers see every segment and every record the writer has:
// the caller has just made them durable.
func (s *Spool) publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.npub != len(s.segs)
	for _, seg := range s.segs[max(s.npub-1, 0):] {
		if seg.durable != seg.size {
			seg.durable, seg.durLast = seg.size, seg.last
			changed = true
		}
	}
	s.npub = len(s.segs)
	if len(s.segs) > 0 {
		last := s.segs[len(s.segs)-1]
		s.pubEnd, s.durableLSN = last.base+last.size, last.last
	}
	if changed {
		s.broadcastLocked()
	}
}

// broadcastLocked wakes every reader waiting in Next.
func (s *Spool) broadcastLocked() {
	close(s.notify)
	s.notify = make(chan struct{})
}
