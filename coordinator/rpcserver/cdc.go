package rpcserver

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jackc/pglogrepl"

	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// Controller carries out the admin calls that need the databases. The
// coordinator implements it.
type Controller interface {
	Cutover(ctx context.Context, endpos string) (*pb.CutoverResponse, error)
	Cleanup(ctx context.Context) (*pb.CleanupResponse, error)
	Prechecker
	Verifier
}

// cdcHub holds what the cdcnode is told and what it reports.
type cdcHub struct {
	mu       sync.Mutex
	watch    *pb.WatchPhaseResponse // nil without --follow
	changed  chan struct{}          // closed at every change of watch or progress
	progress *pb.ReportProgressRequest
	reported time.Time
	// samples of (time, changes applied) for the apply rate.
	samples   []rateSample
	sourceLSN pglogrepl.LSN
	watchers  int
	warnings  []string
}

type rateSample struct {
	at      time.Time
	changes int64
}

func newCDCHub() *cdcHub { return &cdcHub{changed: make(chan struct{})} }

func (h *cdcHub) broadcastLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// SetController installs the coordinator's implementation of Cutover and
// Cleanup.
func (s *Server) SetController(c Controller) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.controller = c
}

// UpdateCDC changes what WatchPhase streams to the cdcnode.
func (s *Server) UpdateCDC(fn func(*pb.WatchPhaseResponse)) {
	h := s.cdc
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watch == nil {
		h.watch = &pb.WatchPhaseResponse{}
	}
	fn(h.watch)
	h.broadcastLocked()
}

// SetSourceStatus records the source's current WAL position and warnings
// about the slot (the coordinator polls them).
func (s *Server) SetSourceStatus(lsn pglogrepl.LSN, warnings []string) {
	h := s.cdc
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sourceLSN, h.warnings = lsn, warnings
}

// CDCWatchers is how many cdcnodes are connected.
func (s *Server) CDCWatchers() int {
	s.cdc.mu.Lock()
	defer s.cdc.mu.Unlock()
	return s.cdc.watchers
}

// WaitCDC waits until cond holds for the latest progress report (or ctx
// ends).
func (s *Server) WaitCDC(ctx context.Context, cond func(p *pb.ReportProgressRequest, watchers int) bool) error {
	h := s.cdc
	for {
		h.mu.Lock()
		ok := cond(h.progress, h.watchers)
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// WatchPhase implements CDCService.
func (s *Server) WatchPhase(req *pb.WatchPhaseRequest, stream pb.CDCService_WatchPhaseServer) error {
	h := s.cdc
	h.mu.Lock()
	h.watchers++
	h.broadcastLocked()
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.watchers--
		h.broadcastLocked()
		h.mu.Unlock()
	}()
	s.log.Info("cdcnode connected", "name", req.GetName())
	var last *pb.WatchPhaseResponse
	for {
		h.mu.Lock()
		cur := h.watch
		if cur != nil {
			cur = proto.Clone(cur).(*pb.WatchPhaseResponse)
		}
		ch := h.changed
		h.mu.Unlock()
		if cur == nil {
			s.mu.RLock()
			settingUp := s.meta == nil || s.meta.Phase == "" || s.meta.Phase == store.PhaseSchema
			s.mu.RUnlock()
			if settingUp {
				return errStarting
			}
			return status.Error(codes.FailedPrecondition, "this migration does not follow changes (start the coordinator with --follow)")
		}
		if last == nil || !proto.Equal(cur, last) {
			if err := stream.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ch:
		}
	}
}

// ReportProgress implements CDCService.
func (s *Server) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) (*pb.ReportProgressResponse, error) {
	h := s.cdc
	now := time.Now()
	h.mu.Lock()
	h.progress = proto.Clone(req).(*pb.ReportProgressRequest)
	h.reported = now
	h.samples = append(h.samples, rateSample{at: now, changes: req.GetChangesApplied()})
	for len(h.samples) > 2 && now.Sub(h.samples[0].at) > 10*time.Second {
		h.samples = h.samples[1:]
	}
	h.broadcastLocked()
	h.mu.Unlock()
	err := s.st.UpdateMeta(func(m *store.Meta) {
		m.CDC = store.CDCProgress{ReceivedLSN: req.GetReceivedLsn(), FlushedLSN: req.GetFlushedLsn(),
			AppliedLSN: req.GetAppliedLsn(), SpoolBytes: req.GetSpoolBytes(), ChangesApplied: req.GetChangesApplied(),
			AppliedCommitTime: req.GetAppliedCommitTime().AsTime(), ReportedAt: now}
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ReportProgressResponse{}, nil
}

// cdcStatus is the status's CDC block, nil without --follow.
func (s *Server) cdcStatus(meta store.Meta) (*pb.CDCStatus, []string) {
	if !meta.Follow {
		return nil, nil
	}
	h := s.cdc
	h.mu.Lock()
	defer h.mu.Unlock()
	out := &pb.CDCStatus{SlotName: meta.Slot, Connected: h.watchers > 0, Endpos: meta.Endpos}
	p := h.progress
	if p == nil {
		// No report since this coordinator started: the store's.
		c := meta.CDC
		p = &pb.ReportProgressRequest{ReceivedLsn: c.ReceivedLSN, FlushedLsn: c.FlushedLSN, AppliedLsn: c.AppliedLSN,
			SpoolBytes: c.SpoolBytes, ChangesApplied: c.ChangesApplied}
		if !c.AppliedCommitTime.IsZero() {
			p.AppliedCommitTime = timestamppb.New(c.AppliedCommitTime)
		}
	}
	out.ReceivedLsn, out.FlushedLsn, out.AppliedLsn = p.GetReceivedLsn(), p.GetFlushedLsn(), p.GetAppliedLsn()
	out.SpoolBytes, out.ChangesApplied, out.DiskFull, out.Error = p.GetSpoolBytes(), p.GetChangesApplied(), p.GetDiskFull(), p.GetError()
	if h.sourceLSN != 0 {
		out.SourceLsn = h.sourceLSN.String()
		applied, _ := pglogrepl.ParseLSN(p.GetAppliedLsn())
		if applied == 0 {
			applied, _ = pglogrepl.ParseLSN(meta.StartLSN)
		}
		if h.sourceLSN > applied {
			out.LagBytes = int64(h.sourceLSN - applied)
		}
	}
	received, _ := pglogrepl.ParseLSN(p.GetReceivedLsn())
	appliedLSN, _ := pglogrepl.ParseLSN(p.GetAppliedLsn())
	if t := p.GetAppliedCommitTime(); t != nil && received > appliedLSN {
		out.LagSeconds = time.Since(t.AsTime()).Seconds()
	}
	if n := len(h.samples); n >= 2 {
		first, last := h.samples[0], h.samples[n-1]
		if d := last.at.Sub(first.at).Seconds(); d > 0 {
			out.ApplyRate = float64(last.changes-first.changes) / d
		}
	}
	return out, append([]string(nil), h.warnings...)
}

// Cutover implements AdminService.
func (s *Server) Cutover(ctx context.Context, req *pb.CutoverRequest) (*pb.CutoverResponse, error) {
	c := s.ctrl()
	if c == nil {
		return nil, errStarting
	}
	resp, err := c.Cutover(ctx, req.GetEndpos())
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// Cleanup implements AdminService.
func (s *Server) Cleanup(ctx context.Context, _ *pb.CleanupRequest) (*pb.CleanupResponse, error) {
	c := s.ctrl()
	if c == nil {
		return nil, errStarting
	}
	resp, err := c.Cleanup(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	// Nothing is left for the workers: they may exit.
	if b, _, _ := s.state(); b != nil {
		b.HoldWorkers(false)
	}
	return resp, nil
}

func (s *Server) ctrl() Controller {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.controller
}
