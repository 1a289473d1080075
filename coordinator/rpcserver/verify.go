package rpcserver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// Verifier compares the coordinator's own source and target: the server
// never holds connection strings. It is part of Controller.
type Verifier interface {
	Verify(ctx context.Context, o verify.Options) (*verify.Report, error)
}

// Verify implements AdminService.
func (s *Server) Verify(ctx context.Context, req *pb.VerifyRequest) (*pb.VerifyResponse, error) {
	c := s.ctrl()
	if c == nil {
		return nil, errStarting
	}
	if req.GetJobs() < 0 || req.GetRangeRows() < 0 || req.GetLeafRows() < 0 || req.GetMaxKeys() < 0 {
		return nil, status.Error(codes.InvalidArgument, "jobs, range_rows, leaf_rows and max_keys must not be negative (0 takes the default)")
	}
	rep, err := c.Verify(ctx, VerifyOptionsFromProto(req))
	switch {
	case errors.Is(err, verify.ErrStateLocked):
		return nil, status.Error(codes.FailedPrecondition, err.Error()+": wait for the running Verify to end")
	case errors.Is(err, verify.ErrOtherPair):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, toStatus(err)
	}
	resp := VerifyToProto(rep, req.GetAllChecks())
	s.log.Info("verify done", "checks", resp.GetChecksTotal(), "failed", resp.GetChecksFailed(), "tables", len(resp.GetTables()))
	return resp, nil
}
