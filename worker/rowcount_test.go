package worker

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// binaryStream builds a COPY binary stream of rows with the given field
// lengths (-1 is NULL).
func binaryStream(ext []byte, rows [][]int32) []byte {
	var b bytes.Buffer
	b.WriteString("PGCOPY\n\xff\r\n\x00")
	binary.Write(&b, binary.BigEndian, uint32(0))
	binary.Write(&b, binary.BigEndian, uint32(len(ext)))
	b.Write(ext)
	for _, row := range rows {
		binary.Write(&b, binary.BigEndian, int16(len(row)))
		for _, l := range row {
			binary.Write(&b, binary.BigEndian, l)
			if l > 0 {
				b.Write(bytes.Repeat([]byte{'\n'}, int(l))) // newlines must not count in binary
			}
		}
	}
	binary.Write(&b, binary.BigEndian, int16(-1))
	return b.Bytes()
}

func TestRowCounterBinary(t *testing.T) {
	stream := binaryStream([]byte("ext"), [][]int32{{4, -1, 0}, {}, {70000}, {1, 2}})
	// Every way of cutting the stream gives the same count.
	for _, chunk := range []int{1, 2, 3, 5, 7, 64, len(stream)} {
		c := newRowCounter(true)
		var total int64
		for off := 0; off < len(stream); off += chunk {
			total += c.feed(stream[off:min(off+chunk, len(stream))])
		}
		if total != 4 || c.rows != 4 || !c.done {
			t.Errorf("chunk %d: counted %d rows (done %v), want 4", chunk, total, c.done)
		}
	}
}

func TestRowCounterText(t *testing.T) {
	c := newRowCounter(false)
	if n := c.feed([]byte("1\ta\\nb\n2\tc\n3")); n != 2 {
		t.Errorf("text rows = %d, want 2", n)
	}
}
