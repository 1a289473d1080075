package coordinator

import (
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// ReadStatus reads a migration's status from its store in dir, without a
// running coordinator. It fails with store.ErrLocked while one runs.
func ReadStatus(dir string) (*pb.StatusResponse, error) {
	st, err := store.Open(dir, store.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return rpcserver.StatusFromStore(st, time.Now())
}
