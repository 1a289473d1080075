package spool

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every call on a closed Spool or Reader, and by
	// Reader.Next when the Spool is closed under it.
	ErrClosed = errors.New("spool: closed")

	// ErrDiskFull matches (errors.Is) every *DiskFullError.
	ErrDiskFull = errors.New("spool: disk full")

	// ErrCorrupt matches (errors.Is) every *CorruptError.
	ErrCorrupt = errors.New("spool: corrupt segment")

	// ErrSegmentRemoved is returned by Reader.Next when Remove deleted a
	// segment that the reader had not read to its end.
	ErrSegmentRemoved = errors.New("spool: segment removed before it was read")

	// ErrTruncated is returned by Reader.Next when Truncate dropped records
	// that this reader had already returned.
	ErrTruncated = errors.New("spool: records already read were truncated away")
)

// DiskFullError reports that a segment could not be created or written
// because its filesystem is full (ENOSPC) or over quota (EDQUOT). The failed
// call changed nothing that readers or a later Open can see; retry it once
// space is free.
type DiskFullError struct {
	Op   string // "create" or "write"
	Path string // the segment file
	Err  error  // the underlying error, from the operating system
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("spool: disk full: %s %s: %v (free space on that filesystem; the spool retries the same append)", e.Op, e.Path, e.Err)
}

func (e *DiskFullError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDiskFull) true.
func (e *DiskFullError) Is(target error) bool { return target == ErrDiskFull }

// CorruptError reports a record that is not intact in a segment that should
// be: any segment but the last at Open, or any durable record when a Reader
// reads it.
type CorruptError struct {
	Path   string // the segment file
	Offset int64  // byte offset of the first record that is not intact
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool: segment %s is corrupt at offset %d: %s (the disk lost data the spool had made durable; the changes in it cannot be replayed)", e.Path, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// formatLSN writes an LSN the way PostgreSQL does, as in pg_lsn: 16/B374D848.
func formatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}
