// Package testlog gives tests an hclog logger whose output is kept in
// memory and printed only when the test fails, so a passing run of a fleet
// stays quiet and a failing one shows everything the fleet said.
package testlog

import (
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// New returns an Info-level logger whose lines t logs, under "log:", if it
// fails.
func New(t testing.TB) hclog.Logger {
	t.Helper()
	out := &buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", out.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info})
}

// buffer is a strings.Builder safe for the fleet's goroutines.
type buffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
