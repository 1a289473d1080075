package worker

import (
	"bytes"
	"encoding/binary"
)

// rowCounter counts the rows of a COPY stream as it passes, for progress,
// without decoding values: in text format every row ends in a newline
// (newlines in values are escaped); in binary format it walks the tuple
// framing and skips field data by its length.
type rowCounter struct {
	binary bool
	rows   int64

	// Binary framing state.
	stage      int   // what the next integer is: extension length, field count or field length
	skip       int64 // data bytes still to skip
	partial    [4]byte
	have       int
	fieldsLeft int
	done       bool
}

const (
	stageExtLen = iota
	stageFieldCount
	stageFieldLen
)

// binaryHeader is the 11-byte signature plus the 4-byte flags field; the
// 4-byte extension length follows.
const binaryHeader = 15

func newRowCounter(binaryFormat bool) *rowCounter {
	c := &rowCounter{binary: binaryFormat}
	if binaryFormat {
		c.skip, c.stage = binaryHeader, stageExtLen
	}
	return c
}

// feed consumes the next bytes of the stream and returns how many rows
// they completed.
func (c *rowCounter) feed(p []byte) int64 {
	before := c.rows
	if !c.binary {
		c.rows += int64(bytes.Count(p, []byte{'\n'}))
		return c.rows - before
	}
	for len(p) > 0 && !c.done {
		if c.skip > 0 {
			n := min(c.skip, int64(len(p)))
			p, c.skip = p[n:], c.skip-n
			continue
		}
		size := 4
		if c.stage == stageFieldCount {
			size = 2
		}
		n := copy(c.partial[c.have:size], p)
		c.have += n
		p = p[n:]
		if c.have < size {
			return c.rows - before
		}
		c.have = 0
		switch c.stage {
		case stageExtLen:
			c.skip = int64(binary.BigEndian.Uint32(c.partial[:4]))
			c.stage = stageFieldCount
		case stageFieldCount:
			fields := int16(binary.BigEndian.Uint16(c.partial[:2]))
			if fields < 0 { // the trailer
				c.done = true
				break
			}
			c.rows++
			if fields > 0 {
				c.fieldsLeft, c.stage = int(fields), stageFieldLen
			}
		case stageFieldLen:
			if l := int32(binary.BigEndian.Uint32(c.partial[:4])); l > 0 {
				c.skip = int64(l)
			}
			if c.fieldsLeft--; c.fieldsLeft == 0 {
				c.stage = stageFieldCount
			}
		}
	}
	return c.rows - before
}
