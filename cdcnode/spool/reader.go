package spool

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
)

const (
	// readWindow is how much a Reader reads from a segment at a time. Small
	// records are returned from inside it, without a copy.
	readWindow = 256 << 10
	// keepLarge is the largest buffer a Reader keeps for the next large
	// payload; a larger one goes back to the garbage collector.
	keepLarge = 64 << 20
)

// Record is one spooled message.
type Record struct {
	LSN     uint64
	Payload []byte // valid until the next call of Next on the same Reader
}

// Reader reads durable records in order, across segments, and follows the
// spool's tail. A Reader belongs to one goroutine; several Readers may read
// one Spool at once.
type Reader struct {
	s    *Spool
	from uint64 // records below it are skipped

	pos       int64  // stream offset of the next record
	gen       uint64 // the Spool's gen when pos was last checked
	delivered bool   // Next has returned a record
	last      uint64 // LSN of that record

	seg *segment // the segment f belongs to
	f   *os.File

	win    []byte // file bytes at stream offsets [winPos, winPos+len(win))
	winPos int64
	large  []byte // a payload too large for win

	closed bool
}

// Reader returns a reader of the records with LSN >= from, starting with the
// first durable one and then following the tail: records appended later are
// returned once a Sync makes them durable. Records already removed by Remove
// are not an error here: the reader starts at the first record there is.
func (s *Spool) Reader(from uint64) (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	r := &Reader{s: s, from: from, gen: s.gen, pos: s.pubEnd}
	segs := s.segs[:s.npub]
	if len(segs) > 0 {
		// Records at from may begin in the segment before the first one
		// named from or later (LSNs can repeat across a rollover): start in
		// the last segment whose first LSN is below from, and skip.
		i := sort.Search(len(segs), func(i int) bool { return segs[i].first >= from })
		r.pos = segs[max(i-1, 0)].base
	}
	return r, nil
}

// Next returns the next durable record with LSN >= from. If there is none
// yet, it waits for a Sync, for ctx, or for the Spool to close. A record that
// is already durable is returned even if ctx is done, so a done ctx drains
// what is there without waiting.
//
// Errors: ctx.Err(); ErrClosed; ErrSegmentRemoved; ErrTruncated; a
// *CorruptError for a durable record that is not intact on disk.
func (r *Reader) Next(ctx context.Context) (Record, error) {
	if r.closed {
		return Record{}, ErrClosed
	}
	if cap(r.large) > keepLarge {
		r.large = nil
	}
	for {
		seg, limit, wait, err := r.locate()
		if err != nil {
			return Record{}, err
		}
		if wait != nil {
			woke := true
			select {
			case <-wait:
			case <-ctx.Done():
				woke = false
			}
			r.s.mu.Lock()
			r.s.waiting--
			r.s.mu.Unlock()
			if !woke {
				return Record{}, ctx.Err()
			}
			continue
		}
		rec, n, err := r.read(seg, limit)
		// A Truncate may have cut what was just read, while it was read:
		// then start over from where the reader now stands.
		r.s.mu.Lock()
		raced := r.gen != r.s.gen
		r.s.mu.Unlock()
		if raced {
			r.win = r.win[:0]
			continue
		}
		if err != nil {
			return Record{}, err
		}
		r.pos += n
		if rec.LSN < r.from {
			continue
		}
		r.delivered, r.last = true, rec.LSN
		return rec, nil
	}
}

// locate finds the segment holding r.pos and the stream offset where its
// durable data ends, opening its file if needed; or, when r.pos is at the
// end of the durable data, the channel that is closed when there may be
// more.
func (r *Reader) locate() (*segment, int64, <-chan struct{}, error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, nil, ErrClosed
	}
	if r.gen != s.gen {
		if err := r.catchUp(); err != nil {
			return nil, 0, nil, err
		}
	}
	if r.pos < s.removedEnd && s.removedLast < r.from {
		// Everything removed that the reader had yet to read, it would
		// have skipped.
		r.pos = s.removedEnd
	}
	if r.pos < s.removedEnd {
		path := s.removedPath
		if r.seg != nil && r.seg.removed {
			path = r.seg.path
		}
		return nil, 0, nil, fmt.Errorf("%w: %s (the reader was at stream offset %d; Remove was given an LSN past what this reader had read)", ErrSegmentRemoved, path, r.pos)
	}
	segs := s.segs[:s.npub]
	i := sort.Search(len(segs), func(i int) bool { return segs[i].base > r.pos }) - 1
	if i < 0 || r.pos >= segs[i].base+segs[i].durable {
		if i >= 0 && i < len(segs)-1 {
			return nil, 0, nil, fmt.Errorf("spool: reader at stream offset %d falls between segments %s and %s (a bug in the spool)", r.pos, segs[i].path, segs[i+1].path)
		}
		s.waiting++
		return nil, 0, s.notify, nil
	}
	seg := segs[i]
	if r.seg != seg {
		// Open under mu: a segment is marked removed before its file goes,
		// so the file is there.
		if r.f != nil {
			r.f.Close()
			r.f = nil
		}
		f, err := os.Open(seg.path)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("spool: open segment for reading: %w", err)
		}
		r.seg, r.f = seg, f
		r.win = r.win[:0]
	}
	return seg, seg.base + seg.durable, nil, nil
}

// catchUp applies the truncations the reader has not seen. Called with
// Spool.mu held.
func (r *Reader) catchUp() error {
	s := r.s
	for _, t := range s.truncs {
		if t.gen <= r.gen {
			continue
		}
		if r.delivered && r.last > t.after {
			return fmt.Errorf("%w: the reader returned LSN %s, and Truncate dropped everything after %s", ErrTruncated, formatLSN(r.last), formatLSN(t.after))
		}
		r.pos = min(r.pos, t.cut)
	}
	r.gen = s.gen
	r.win = r.win[:0]
	return nil
}

// read reads and checks the record at r.pos in seg, whose durable data ends
// at stream offset limit. It returns the record and its size on disk.
func (r *Reader) read(seg *segment, limit int64) (Record, int64, error) {
	corrupt := func(reason string, args ...any) (Record, int64, error) {
		return Record{}, 0, &CorruptError{Path: seg.path, Offset: r.pos - seg.base, Reason: fmt.Sprintf(reason, args...)}
	}
	hb, err := r.bytes(seg, r.pos, hdrSize, limit)
	if err != nil {
		return Record{}, 0, err
	}
	h := parseHeader(hb)
	if why := h.check(r.pos, limit, 0); why != "" {
		return corrupt("%s", why)
	}
	crc := crc32.Update(0, castagnoli, hb[4:12])
	n := int64(h.length)
	start := r.pos + hdrSize
	var payload []byte
	if hdrSize+n <= readWindow {
		if payload, err = r.bytes(seg, start, n, limit); err != nil {
			return Record{}, 0, err
		}
	} else {
		// Too large for the window: into a buffer of its own, taking what
		// the window already holds.
		if int64(cap(r.large)) < n {
			r.large = make([]byte, n)
		}
		payload = r.large[:n]
		got := 0
		if start < r.winPos+int64(len(r.win)) {
			got = copy(payload, r.win[start-r.winPos:])
		}
		if _, err := r.f.ReadAt(payload[got:], start+int64(got)-seg.base); err != nil {
			return r.readError(seg, start+int64(got), err)
		}
	}
	if crc32.Update(crc, castagnoli, payload) != h.crc {
		return corrupt("CRC mismatch in the record at LSN %s", formatLSN(h.lsn))
	}
	return Record{LSN: h.lsn, Payload: payload}, hdrSize + n, nil
}

// bytes returns n bytes at stream offset pos in seg, from the window,
// refilling it from pos up to limit if it does not hold them.
func (r *Reader) bytes(seg *segment, pos, n, limit int64) ([]byte, error) {
	if pos >= r.winPos && pos+n <= r.winPos+int64(len(r.win)) {
		i := pos - r.winPos
		return r.win[i : i+n : i+n], nil
	}
	if pos+n > limit {
		_, _, err := r.readError(seg, pos, io.ErrUnexpectedEOF)
		return nil, err
	}
	if r.win == nil {
		r.win = make([]byte, 0, readWindow)
	}
	m := min(int64(cap(r.win)), limit-pos)
	r.win, r.winPos = r.win[:m], pos
	if _, err := r.f.ReadAt(r.win, pos-seg.base); err != nil {
		r.win = r.win[:0]
		_, _, err = r.readError(seg, pos, err)
		return nil, err
	}
	return r.win[:n:n], nil
}

func (r *Reader) readError(seg *segment, pos int64, err error) (Record, int64, error) {
	return Record{}, 0, fmt.Errorf("spool: read %s at offset %d: %w", seg.path, pos-seg.base, err)
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	r.win, r.large = nil, nil
	if r.f != nil {
		err := r.f.Close()
		r.f = nil
		return err
	}
	return nil
}
