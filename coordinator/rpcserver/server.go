// Package rpcserver implements the coordinator's gRPC services on top of the
// lease broker and the store. Domain errors become gRPC status codes here and
// nowhere else; proto conversion lives in convert.go.
package rpcserver

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// Config tunes the services.
type Config struct {
	// HeartbeatInterval is what workers are told to heartbeat at.
	HeartbeatInterval time.Duration
	// MaxWait caps an AcquireUnit long-poll.
	MaxWait time.Duration
}

// Server serves CoordinatorService and AdminService. The coordinator starts
// it before planning (so status answers during the schema phase) and hands
// it the broker once the plan exists.
type Server struct {
	pb.UnimplementedCoordinatorServiceServer
	pb.UnimplementedAdminServiceServer
	pb.UnimplementedCDCServiceServer

	cfg Config
	st  *store.Store
	log hclog.Logger

	mu         sync.RWMutex
	broker     *lease.Broker
	snapshot   string
	meta       *store.Meta
	controller Controller
	cdc        *cdcHub
	// ready is closed once the migration and the broker are both set.
	ready chan struct{}
}

// New returns a server over the store.
func New(cfg Config, st *store.Store, logger hclog.Logger) *Server {
	return &Server{cfg: cfg, st: st, log: logger.Named("rpc"), cdc: newCDCHub(), ready: make(chan struct{})}
}

// SetMigration makes the migration's identity known, so workers can register.
func (s *Server) SetMigration(meta store.Meta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta = &meta
	s.holdLocked()
}

// SetBroker starts handing out units from b under snapshot.
func (s *Server) SetBroker(b *lease.Broker, snapshot string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broker, s.snapshot = b, snapshot
	s.holdLocked()
}

// holdLocked keeps the workers of a --follow migration that is not cleaned
// up waiting for (verify) units once the copy is done, instead of letting
// them exit; Cleanup lets them go. It also lets registrations through once
// the migration is set up.
func (s *Server) holdLocked() {
	if s.broker == nil || s.meta == nil {
		return
	}
	s.broker.HoldWorkers(s.meta.Follow && !s.meta.Cleaned)
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
}

// SetSnapshot changes the snapshot leases carry ("" once released).
func (s *Server) SetSnapshot(snapshot string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snapshot = snapshot
}

func (s *Server) state() (*lease.Broker, string, *store.Meta) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.broker, s.snapshot, s.meta
}

// toStatus maps domain errors to gRPC codes.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lease.ErrStaleToken):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, lease.ErrUnknownWorker), errors.Is(err, lease.ErrUnknownUnit):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, lease.ErrNotFailed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, lease.ErrNotVerify):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, ErrNotFollowing):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// ErrNotFollowing is returned by a Controller asked for a cutover the
// migration is not ready for.
var ErrNotFollowing = errors.New("rpcserver: not following")

var errStarting = status.Error(codes.Unavailable, "coordinator is starting: the migration is not set up yet; retry")

// registerWait is how long a registration waits for the migration to be set
// up before it is told to retry: workers that start with the coordinator
// get their first units the moment the plan is ready, not after a backoff.
const registerWait = 5 * time.Second

// RegisterWorker implements CoordinatorService.
func (s *Server) RegisterWorker(ctx context.Context, req *pb.RegisterWorkerRequest) (*pb.RegisterWorkerResponse, error) {
	wait := time.NewTimer(registerWait)
	defer wait.Stop()
	select {
	case <-s.ready:
	case <-wait.C:
		return nil, errStarting
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	b, _, meta := s.state()
	id, err := b.RegisterWorker(req.GetName(), int(req.GetJobs()))
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("worker registered", "worker_id", id, "name", req.GetName(), "jobs", req.GetJobs())
	return &pb.RegisterWorkerResponse{WorkerId: id, MigrationId: meta.MigrationID,
		Source: identityToProto(meta.Source), Target: identityToProto(meta.Target),
		HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval)}, nil
}

// AcquireUnit implements CoordinatorService.
func (s *Server) AcquireUnit(ctx context.Context, req *pb.AcquireUnitRequest) (*pb.AcquireUnitResponse, error) {
	b, _, meta := s.state()
	if b == nil || meta == nil {
		return nil, errStarting
	}
	wait := min(req.GetWait().AsDuration(), s.cfg.MaxWait)
	var kinds []plan.Kind
	for _, k := range req.GetKinds() {
		kinds = append(kinds, KindFromProto(k))
	}
	l, finished, err := b.Acquire(ctx, req.GetWorkerId(), kinds, wait)
	if err != nil {
		return nil, toStatus(err)
	}
	if l == nil {
		return &pb.AcquireUnitResponse{MigrationFinished: finished}, nil
	}
	// Read the snapshot after the lease: it may have been released meanwhile
	// only if no unit needing it was pending, and this one is.
	_, snapshot, _ := s.state()
	return &pb.AcquireUnitResponse{Lease: LeaseToProto(l, snapshot, meta.MigrationID)}, nil
}

// Heartbeat implements CoordinatorService.
func (s *Server) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	exp, err := b.Heartbeat(req.GetWorkerId(), req.GetUnitId(), req.GetToken(), req.GetRows(), req.GetBytes())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.HeartbeatResponse{ExpiresAt: timestamppb.New(exp)}, nil
}

// CompleteUnit implements CoordinatorService.
func (s *Server) CompleteUnit(ctx context.Context, req *pb.CompleteUnitRequest) (*pb.CompleteUnitResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	var err error
	if req.GetVerifySource() != nil || req.GetVerifyTarget() != nil {
		err = b.CompleteVerify(req.GetWorkerId(), req.GetUnitId(), req.GetToken(),
			RangeSumFromProto(req.GetVerifySource()), RangeSumFromProto(req.GetVerifyTarget()))
	} else {
		err = b.Complete(req.GetWorkerId(), req.GetUnitId(), req.GetToken(), req.GetRows(), req.GetBytes())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CompleteUnitResponse{}, nil
}

// FailUnit implements CoordinatorService.
func (s *Server) FailUnit(ctx context.Context, req *pb.FailUnitRequest) (*pb.FailUnitResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	st, err := b.Fail(req.GetWorkerId(), req.GetUnitId(), req.GetToken(), req.GetError(), req.GetRelease())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.FailUnitResponse{State: StateToProto(st)}, nil
}

// Status implements AdminService.
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	return s.status()
}

func (s *Server) status() (*pb.StatusResponse, error) {
	b, _, _ := s.state()
	meta, err := s.st.Meta()
	if errors.Is(err, store.ErrNoMigration) {
		return &pb.StatusResponse{Phase: pb.Phase_PHASE_SCHEMA}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	tables, err := s.st.Tables()
	if err != nil {
		return nil, toStatus(err)
	}
	epochs, err := s.st.Epochs()
	if err != nil {
		return nil, toStatus(err)
	}
	var snap lease.Snapshot
	if b != nil {
		snap = b.Snapshot()
	}
	resp := BuildStatus(meta, tables, epochs, snap, time.Now())
	var warnings []string
	resp.Cdc, warnings = s.cdcStatus(meta)
	resp.Warnings = append(resp.Warnings, warnings...)
	return resp, nil
}

// ListTables implements AdminService.
func (s *Server) ListTables(ctx context.Context, _ *pb.ListTablesRequest) (*pb.ListTablesResponse, error) {
	st, err := s.status()
	if err != nil {
		return nil, err
	}
	return &pb.ListTablesResponse{Tables: st.GetTables()}, nil
}

// ListUnits implements AdminService.
func (s *Server) ListUnits(ctx context.Context, req *pb.ListUnitsRequest) (*pb.ListUnitsResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return &pb.ListUnitsResponse{}, nil
	}
	resp := &pb.ListUnitsResponse{}
	for _, u := range b.Snapshot().Units {
		if req.GetState() != pb.UnitState_UNIT_STATE_UNSPECIFIED && StateToProto(u.State) != req.GetState() {
			continue
		}
		if req.GetTable() != "" && u.Table != req.GetTable() {
			continue
		}
		resp.Units = append(resp.Units, UnitInfoToProto(u))
	}
	return resp, nil
}

// Pause implements AdminService.
func (s *Server) Pause(ctx context.Context, _ *pb.PauseRequest) (*pb.PauseResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	b.SetPaused(true)
	s.log.Info("paused: no new units are handed out")
	return &pb.PauseResponse{}, nil
}

// Resume implements AdminService.
func (s *Server) Resume(ctx context.Context, _ *pb.ResumeRequest) (*pb.ResumeResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	b.SetPaused(false)
	s.log.Info("resumed")
	return &pb.ResumeResponse{}, nil
}

// RetryUnit implements AdminService.
func (s *Server) RetryUnit(ctx context.Context, req *pb.RetryUnitRequest) (*pb.RetryUnitResponse, error) {
	b, _, _ := s.state()
	if b == nil {
		return nil, errStarting
	}
	if req.GetAllFailed() {
		ids, err := b.RetryFailed()
		if err != nil {
			return nil, toStatus(err)
		}
		s.log.Info("failed units requeued", "units", len(ids))
		return &pb.RetryUnitResponse{UnitIds: ids}, nil
	}
	if len(req.GetUnitIds()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "give unit_ids or all_failed")
	}
	resp := &pb.RetryUnitResponse{}
	for _, id := range req.GetUnitIds() {
		if err := b.Retry(id); err != nil {
			return resp, toStatus(err)
		}
		s.log.Info("unit requeued", "unit_id", id)
		resp.UnitIds = append(resp.UnitIds, id)
	}
	return resp, nil
}

// Metrics returns the status and the broker's lease counters, for the
// Prometheus collector; nil before the migration is set up.
func (s *Server) Metrics(now time.Time) (*pb.StatusResponse, int, int) {
	st, err := s.status()
	if err != nil || st.GetMigrationId() == "" {
		return nil, 0, 0
	}
	b, _, _ := s.state()
	if b == nil {
		return st, 0, 0
	}
	snap := b.Snapshot()
	return st, snap.Expirations, snap.Redeliveries
}

// Broker is the lease broker once the plan exists, or nil.
func (s *Server) Broker() *lease.Broker {
	b, _, _ := s.state()
	return b
}
