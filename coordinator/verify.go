package coordinator

import (
	"context"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
)

// Verify implements rpcserver.Controller: verify against this
// coordinator's own source and target, with its filter, keeping each
// range's result in its --dir (verify.db, next to the store) so a call
// after an interrupted one resumes. verify's own lock on that file lets one
// call run at a time. The ranges are compared by o.Jobs sessions per side
// inside the coordinator, not leased to workers.
func (c *Coordinator) Verify(ctx context.Context, o verify.Options) (*verify.Report, error) {
	o.Filter = c.cfg.Filter
	o.Dir = c.cfg.Dir
	o.Logger = c.log.Named("verify")
	return verify.Compare(ctx, c.cfg.SourceURI, c.cfg.TargetURI, o)
}
