package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// The worker runs pull loops, heartbeats and COPY pipes in goroutines, and
// the fleet tests run a coordinator in-process: none may outlive Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
