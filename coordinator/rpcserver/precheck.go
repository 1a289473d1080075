package rpcserver

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// Prechecker runs the prechecks against the coordinator's own source and
// target: the server never holds connection strings. It is part of
// Controller.
type Prechecker interface {
	Precheck(ctx context.Context, o precheck.Options) (precheck.Report, error)
}

// maxWALSample bounds a requested WAL sample, so a call cannot hold a
// source session (and the caller) for long.
const maxWALSample = time.Minute

// Precheck implements AdminService.
func (s *Server) Precheck(ctx context.Context, req *pb.PrecheckRequest) (*pb.PrecheckResponse, error) {
	c := s.ctrl()
	if c == nil {
		return nil, errStarting
	}
	o := PrecheckOptionsFromProto(req)
	if o.WALSample > maxWALSample || o.WALSample < 0 || o.LongTransaction < 0 {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf(
			"wal_sample must be between 0 (the default) and %s, and long_transaction not negative; got %s and %s",
			maxWALSample, o.WALSample, o.LongTransaction))
	}
	rep, err := c.Precheck(ctx, o)
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("precheck done", "checks", len(rep.Checks), "failed", rep.Failed())
	return PrecheckToProto(rep), nil
}
