package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	hdrSize     = 16
	segExt      = ".seg"
	lockName    = "LOCK"
	scanBufSize = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one segment file. Readers see only the fields guarded by
// Spool.mu, and only of the first Spool.npub segments.
type segment struct {
	first uint64 // LSN of the first record; the file name
	path  string
	base  int64 // stream offset of the first byte (see Spool)

	// Owned by the writer (Spool.wmu): everything appended, buffered or not.
	size int64
	last uint64 // LSN of the last record

	// Guarded by Spool.mu: what readers may read.
	durable int64  // bytes from the start that are durable
	durLast uint64 // LSN of the last durable record
	removed bool   // deleted by Truncate or Remove
}

func segmentFile(first uint64) string {
	return fmt.Sprintf("%016X%s", first, segExt)
}

type segmentName struct {
	file string
	lsn  uint64
}

// segmentNames lists DIR's segment files in LSN order. A file that ends in
// .seg but is not named as this package names segments is an error: the
// spool would otherwise skip records, or read some twice.
func segmentNames(dir string) ([]segmentName, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: list %s: %w", dir, err)
	}
	var names []segmentName
	for _, e := range entries { // sorted by name, and names sort like LSNs
		name := e.Name()
		stem, ok := strings.CutSuffix(name, segExt)
		if !ok {
			continue
		}
		lsn, err := strconv.ParseUint(stem, 16, 64)
		if err != nil || !e.Type().IsRegular() || segmentFile(lsn) != name {
			return nil, fmt.Errorf("spool: unexpected %s in %s: segments are regular files named by 16 upper-case hex digits (move it out of the spool directory)", name, dir)
		}
		names = append(names, segmentName{file: name, lsn: lsn})
	}
	return names, nil
}

// appendRecord appends one framed record to b.
func appendRecord(b []byte, lsn uint64, payload []byte) []byte {
	var h [hdrSize]byte
	putHeader(&h, lsn, payload)
	return append(append(b, h[:]...), payload...)
}

func putHeader(h *[hdrSize]byte, lsn uint64, payload []byte) {
	binary.BigEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint64(h[4:12], lsn)
	crc := crc32.Update(0, castagnoli, h[4:12])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.BigEndian.PutUint32(h[12:16], crc)
}

// header is a decoded record header.
type header struct {
	length uint32
	lsn    uint64
	crc    uint32
}

func parseHeader(b []byte) header {
	return header{
		length: binary.BigEndian.Uint32(b[0:4]),
		lsn:    binary.BigEndian.Uint64(b[4:12]),
		crc:    binary.BigEndian.Uint32(b[12:16]),
	}
}

// check returns why a record with this header cannot be the one at off,
// in data that ends at size, after a record at LSN prev; or "".
func (h header) check(off, size int64, prev uint64) string {
	switch {
	case int64(h.length) > size-off-hdrSize:
		return fmt.Sprintf("a record of %d bytes runs past the end of the data", h.length)
	case h.lsn == 0:
		return "record has LSN 0/0"
	case h.lsn < prev:
		return fmt.Sprintf("LSN %s goes back from %s", formatLSN(h.lsn), formatLSN(prev))
	}
	return ""
}

// scanFile checks the records of a segment file from its start, in order:
// framing, CRC, and LSNs that never go below prev. It calls visit with each
// intact record's offset and LSN; when visit returns false the scan stops
// before that record. It returns the offset just past the last record
// visited and, if it stopped at a record that is not intact, a *CorruptError
// for that offset.
func scanFile(path string, prev uint64, visit func(off int64, lsn uint64) bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("spool: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool: stat segment: %w", err)
	}
	size := fi.Size()
	br := bufio.NewReaderSize(f, scanBufSize)
	corrupt := func(off int64, format string, args ...any) (int64, error) {
		return off, &CorruptError{Path: path, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	var off int64
	var hb [hdrSize]byte
	for off < size {
		if size-off < hdrSize {
			return corrupt(off, "%d bytes at the end are too short for a record header", size-off)
		}
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			return off, fmt.Errorf("spool: read %s at offset %d: %w", path, off, err)
		}
		h := parseHeader(hb[:])
		if why := h.check(off, size, prev); why != "" {
			return corrupt(off, "%s", why)
		}
		crc := crc32.Update(0, castagnoli, hb[4:12])
		// Stream the payload through the CRC: a payload can be a gigabyte.
		for n := int(h.length); n > 0; {
			b, err := br.Peek(min(n, scanBufSize))
			crc = crc32.Update(crc, castagnoli, b)
			if _, derr := br.Discard(len(b)); derr != nil && err == nil {
				err = derr
			}
			n -= len(b)
			if err != nil && n > 0 {
				if errors.Is(err, io.EOF) {
					return corrupt(off, "file ended inside a record (it shrank while being read)")
				}
				return off, fmt.Errorf("spool: read %s at offset %d: %w", path, off, err)
			}
		}
		if crc != h.crc {
			return corrupt(off, "CRC mismatch in the record at LSN %s", formatLSN(h.lsn))
		}
		if !visit(off, h.lsn) {
			return off, nil
		}
		prev = h.lsn
		off += hdrSize + int64(h.length)
	}
	return off, nil
}

// truncateFile cuts a file to size and makes that durable.
func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// segmentPath is the path of the segment whose first LSN is first.
func segmentPath(dir string, first uint64) string {
	return filepath.Join(dir, segmentFile(first))
}
