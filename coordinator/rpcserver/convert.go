package rpcserver

import (
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// This file is the only place where domain types become proto messages and
// back.

var kindToProto = map[plan.Kind]pb.UnitKind{
	plan.KindCopy:         pb.UnitKind_UNIT_KIND_COPY,
	plan.KindIndex:        pb.UnitKind_UNIT_KIND_INDEX,
	plan.KindConstraint:   pb.UnitKind_UNIT_KIND_CONSTRAINT,
	plan.KindForeignKey:   pb.UnitKind_UNIT_KIND_FOREIGN_KEY,
	plan.KindPostData:     pb.UnitKind_UNIT_KIND_POST_DATA,
	plan.KindSequences:    pb.UnitKind_UNIT_KIND_SEQUENCES,
	plan.KindVacuum:       pb.UnitKind_UNIT_KIND_VACUUM,
	plan.KindLargeObjects: pb.UnitKind_UNIT_KIND_LARGE_OBJECTS,
	plan.KindRefresh:      pb.UnitKind_UNIT_KIND_REFRESH,
	store.KindVerify:      pb.UnitKind_UNIT_KIND_VERIFY,
}

// KindToProto converts a unit kind.
func KindToProto(k plan.Kind) pb.UnitKind { return kindToProto[k] }

// KindFromProto converts a unit kind; unknown kinds give "".
func KindFromProto(k pb.UnitKind) plan.Kind {
	for d, p := range kindToProto {
		if p == k {
			return d
		}
	}
	return ""
}

var stateToProto = map[store.State]pb.UnitState{
	store.StateBlocked: pb.UnitState_UNIT_STATE_BLOCKED,
	store.StateReady:   pb.UnitState_UNIT_STATE_READY,
	store.StateRunning: pb.UnitState_UNIT_STATE_RUNNING,
	store.StateDone:    pb.UnitState_UNIT_STATE_DONE,
	store.StateFailed:  pb.UnitState_UNIT_STATE_FAILED,
}

// StateToProto converts a unit state.
func StateToProto(s store.State) pb.UnitState { return stateToProto[s] }

var phaseToProto = map[store.Phase]pb.Phase{
	store.PhaseSchema:   pb.Phase_PHASE_SCHEMA,
	store.PhaseCopy:     pb.Phase_PHASE_COPY,
	store.PhaseFinalize: pb.Phase_PHASE_FINALIZE,
	store.PhaseDone:     pb.Phase_PHASE_DONE,
	store.PhaseFailed:   pb.Phase_PHASE_FAILED,
	store.PhaseFollow:   pb.Phase_PHASE_FOLLOW,
	store.PhaseCutover:  pb.Phase_PHASE_CUTOVER,
}

// UnitToProto converts a planned unit.
func UnitToProto(u plan.Unit) *pb.Unit {
	out := &pb.Unit{Id: u.ID, Kind: KindToProto(u.Kind), Table: u.Table, Sql: u.SQL,
		Transactional: u.Transactional, Description: u.Description}
	if c := u.Copy; c != nil {
		format := pb.CopyFormat_COPY_FORMAT_TEXT
		if c.Format == plan.FormatBinary {
			format = pb.CopyFormat_COPY_FORMAT_BINARY
		}
		out.Copy = &pb.CopySpec{Schema: c.Schema, Table: c.Table, Columns: c.Columns, Format: format,
			TruncateFreeze: c.TruncateFreeze, StartBlock: c.StartBlock, EndBlock: c.EndBlock}
		if k := c.Key; k != nil {
			out.Copy.KeyColumn, out.Copy.KeyLower, out.Copy.KeyUpper = k.Column, k.Lower, k.Upper
			out.Copy.KeyLowerUnbounded, out.Copy.KeyUpperUnbounded = k.LowerUnbounded, k.UpperUnbounded
		}
	}
	if lo := u.LargeObjects; lo != nil {
		out.LargeObjects = &pb.LargeObjectRange{FirstOid: lo.FirstOID, LastOid: lo.LastOID, NoOwner: lo.NoOwner, NoAcl: lo.NoACL}
	}
	return out
}

// VerifyRangeToProto converts what a verify unit compares.
func VerifyRangeToProto(v *store.VerifyRange) *pb.VerifyRange {
	if v == nil {
		return nil
	}
	out := &pb.VerifyRange{Schema: v.Schema, Table: v.Table, KeyColumn: v.Key,
		KeyLowerUnbounded: v.Lower == nil, KeyUpperUnbounded: v.Upper == nil,
		SourceSnapshot: v.SourceSnapshot, TargetSnapshot: v.TargetSnapshot}
	if v.Lower != nil {
		out.KeyLower = *v.Lower
	}
	if v.Upper != nil {
		out.KeyUpper = *v.Upper
	}
	return out
}

// RangeSumFromProto converts one side's count and checksum of a range.
func RangeSumFromProto(s *pb.RangeSum) store.RangeSum {
	return store.RangeSum{Rows: s.GetRows(), Sum: s.GetSum()}
}

// LeaseToProto converts a lease.
func LeaseToProto(l *lease.Lease, snapshot, migrationID string) *pb.Lease {
	out := &pb.Lease{Unit: UnitToProto(l.Unit.Unit), Token: l.Token, ExpiresAt: timestamppb.New(l.Expiry),
		MigrationId: migrationID, Attempt: int32(l.Attempt)}
	out.Unit.Verify = VerifyRangeToProto(l.Unit.Verify)
	if l.Unit.NeedsSnapshot {
		out.Snapshot = snapshot
	}
	return out
}

func identityToProto(id store.Identity) *pb.DatabaseIdentity {
	return &pb.DatabaseIdentity{SystemIdentifier: id.SystemID, Database: id.Database}
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// UnitInfoToProto converts a unit with its state.
func UnitInfoToProto(u store.Unit) *pb.UnitInfo {
	out := &pb.UnitInfo{Unit: UnitToProto(u.Unit), State: StateToProto(u.State), Attempts: int32(u.Attempts),
		DependsOn: u.DependsOn, WorkerId: u.WorkerID, Rows: u.Rows, Bytes: u.Bytes,
		StartedAt: ts(u.StartedAt), FinishedAt: ts(u.FinishedAt), LastError: u.LastError}
	out.Unit.Verify = VerifyRangeToProto(u.Verify)
	return out
}

// connectedWithin is how recently a worker must have called to count as
// connected.
const connectedWithin = 30 * time.Second

// BuildStatus computes the status from the migration, its tables and a
// copy of the broker's state. Both the live coordinator and `status --dir`
// (which has no broker) use it.
func BuildStatus(meta store.Meta, tables []store.Table, epochs []store.Epoch, snap lease.Snapshot, now time.Time) *pb.StatusResponse {
	resp := &pb.StatusResponse{
		MigrationId: meta.MigrationID, Phase: phaseToProto[meta.Phase], Paused: snap.Paused,
		Source: identityToProto(meta.Source), Target: identityToProto(meta.Target),
		StartedAt: ts(meta.StartedAt), FinishedAt: ts(meta.FinishedAt), Snapshot: meta.Snapshot,
		Warnings: meta.Warnings,
	}
	counts := map[store.State]int64{}
	lsn := map[uint32]string{}
	for _, e := range epochs {
		lsn[e.ID] = e.LSN
	}
	byTable := map[uint32]*pb.TableStatus{}
	for _, t := range tables {
		if !t.HasData() {
			continue
		}
		byTable[t.OID] = &pb.TableStatus{Schema: t.Schema, Name: t.Name, State: pb.TableState_TABLE_STATE_PENDING,
			EstimatedRows: t.EstRows, EstimatedBytes: t.Bytes, Epoch: t.EpochID, EpochLsn: lsn[t.EpochID]}
		resp.RowsTotalEstimate += t.EstRows
		resp.BytesTotalEstimate += t.Bytes
	}
	held := map[string][]uint64{}
	type span struct{ start, end time.Time }
	phases := map[string]*span{}
	tableSpans := map[uint32]map[string]*span{}
	widen := func(m map[string]*span, name string, u store.Unit) {
		s, ok := m[name]
		if !ok {
			s = &span{start: u.StartedAt, end: u.FinishedAt}
			m[name] = s
		}
		if u.StartedAt.Before(s.start) {
			s.start = u.StartedAt
		}
		if u.FinishedAt.After(s.end) {
			s.end = u.FinishedAt
		}
	}
	tableFailed := map[uint32]bool{}
	tableDoneAll := map[uint32]bool{}
	for oid := range byTable {
		tableDoneAll[oid] = true
	}
	for _, u := range snap.Units {
		counts[u.State]++
		if u.State == store.StateRunning {
			held[u.WorkerID] = append(held[u.WorkerID], u.ID)
		}
		if u.State == store.StateFailed {
			resp.FailedUnits = append(resp.FailedUnits, &pb.FailedUnit{UnitId: u.ID, Kind: KindToProto(u.Kind),
				Table: u.Table, Description: u.Description, Error: u.LastError, Attempts: int32(u.Attempts)})
		}
		if u.State == store.StateDone && !u.StartedAt.IsZero() {
			widen(phases, string(u.Kind), u)
		}
		t, ok := byTable[u.TableOID]
		if !ok {
			continue
		}
		if u.State != store.StateDone {
			tableDoneAll[u.TableOID] = false
		}
		if u.State == store.StateFailed {
			tableFailed[u.TableOID] = true
		}
		if tableSpans[u.TableOID] == nil {
			tableSpans[u.TableOID] = map[string]*span{}
		}
		switch u.Kind {
		case plan.KindCopy:
			t.CopyUnits++
			if u.State == store.StateDone {
				t.CopyUnitsDone++
			}
			if u.State == store.StateDone || u.State == store.StateRunning {
				t.Rows += u.Rows
				t.Bytes += u.Bytes
				resp.RowsDone += u.Rows
				resp.BytesDone += u.Bytes
			}
			if !u.StartedAt.IsZero() && (t.CopyStartedAt == nil || u.StartedAt.Before(t.CopyStartedAt.AsTime())) {
				t.CopyStartedAt = timestamppb.New(u.StartedAt)
			}
			if u.State == store.StateDone {
				widen(tableSpans[u.TableOID], "copy", u)
			}
		case plan.KindIndex, plan.KindConstraint:
			if u.State == store.StateRunning {
			}
			if u.State == store.StateDone {
				widen(tableSpans[u.TableOID], "index", u)
			}
		}
	}
	for oid, t := range byTable {
		if s := tableSpans[oid]["copy"]; s != nil {
			t.CopyMillis = s.end.Sub(s.start).Milliseconds()
		}
		if s := tableSpans[oid]["index"]; s != nil {
			t.IndexMillis = s.end.Sub(s.start).Milliseconds()
		}
		switch {
		case tableFailed[oid]:
			t.State = pb.TableState_TABLE_STATE_FAILED
		case tableDoneAll[oid] && len(snap.Units) > 0:
			t.State = pb.TableState_TABLE_STATE_DONE
		case t.CopyUnits > 0 && t.CopyUnitsDone == t.CopyUnits:
			t.State = pb.TableState_TABLE_STATE_INDEXING
		case t.CopyStartedAt != nil:
			t.State = pb.TableState_TABLE_STATE_COPYING
		}
		resp.Tables = append(resp.Tables, t)
	}
	sort.Slice(resp.Tables, func(i, j int) bool {
		a, b := resp.Tables[i], resp.Tables[j]
		if a.Schema != b.Schema {
			return a.Schema < b.Schema
		}
		return a.Name < b.Name
	})
	for _, s := range []store.State{store.StateBlocked, store.StateReady, store.StateRunning, store.StateDone, store.StateFailed} {
		resp.Units = append(resp.Units, &pb.UnitStateCount{State: StateToProto(s), Count: counts[s]})
	}
	for _, w := range snap.Workers {
		if now.Sub(w.LastSeen) > connectedWithin && len(held[w.ID]) == 0 {
			continue
		}
		resp.Workers = append(resp.Workers, &pb.WorkerInfo{WorkerId: w.ID, Name: w.Name, Jobs: int32(w.Jobs),
			LastSeen: ts(w.LastSeen), UnitIds: held[w.ID]})
	}
	for _, t := range meta.Timings {
		resp.Timings = append(resp.Timings, &pb.PhaseTiming{Name: t.Name, Millis: t.Millis})
	}
	for _, k := range []plan.Kind{plan.KindCopy, plan.KindIndex, plan.KindConstraint, plan.KindVacuum,
		plan.KindForeignKey, plan.KindPostData, plan.KindSequences, plan.KindLargeObjects, plan.KindRefresh} {
		if s := phases[string(k)]; s != nil {
			resp.Timings = append(resp.Timings, &pb.PhaseTiming{Name: string(k), Millis: s.end.Sub(s.start).Milliseconds()})
		}
	}
	return resp
}

// StatusFromStore builds the status of a migration from its store alone,
// for `pgcaravan status --dir` after the coordinator has gone.
func StatusFromStore(st *store.Store, now time.Time) (*pb.StatusResponse, error) {
	meta, err := st.Meta()
	if err != nil {
		return nil, err
	}
	tables, err := st.Tables()
	if err != nil {
		return nil, err
	}
	units, err := st.Units()
	if err != nil {
		return nil, err
	}
	workers, err := st.Workers()
	if err != nil {
		return nil, err
	}
	epochs, err := st.Epochs()
	if err != nil {
		return nil, err
	}
	return BuildStatus(meta, tables, epochs, lease.Snapshot{Units: units, Workers: workers}, now), nil
}

var levelToProto = map[precheck.Level]pb.CheckLevel{
	precheck.Pass: pb.CheckLevel_CHECK_LEVEL_PASS,
	precheck.Warn: pb.CheckLevel_CHECK_LEVEL_WARN,
	precheck.Fail: pb.CheckLevel_CHECK_LEVEL_FAIL,
}

// PrecheckToProto converts a precheck's report; the CLI prints the same
// message as the admin API returns.
func PrecheckToProto(r precheck.Report) *pb.PrecheckResponse {
	out := &pb.PrecheckResponse{Failed: r.Failed()}
	for _, c := range r.Checks {
		out.Checks = append(out.Checks, &pb.PrecheckCheck{Name: c.Name, Level: levelToProto[c.Level], Message: c.Message, Hint: c.Hint})
	}
	f := r.Forecast
	out.Forecast = &pb.PrecheckForecast{DataBytes: f.DataBytes, WalBytesPerSecond: f.WALBytesPerSecond,
		WalSampleMillis: f.WALSample.Milliseconds(), AssumedCopyBytesPerSecond: f.AssumedCopyRate,
		EstimatedCopyMillis: f.EstimatedCopy.Milliseconds(), EstimatedWalBytes: f.EstimatedWALBytes}
	return out
}

// PrecheckOptionsFromProto converts a request; unset durations stay zero
// (the defaults).
func PrecheckOptionsFromProto(req *pb.PrecheckRequest) precheck.Options {
	o := precheck.Options{Follow: req.GetFollow()}
	if d := req.GetWalSample(); d != nil {
		o.WALSample = d.AsDuration()
	}
	if d := req.GetLongTransaction(); d != nil {
		o.LongTransaction = d.AsDuration()
	}
	return o
}

// VerifyOptionsFromProto converts a Verify request; zeros take verify's
// defaults.
func VerifyOptionsFromProto(req *pb.VerifyRequest) verify.Options {
	return verify.Options{Jobs: int(req.GetJobs()), RangeRows: req.GetRangeRows(), LeafRows: req.GetLeafRows(),
		MaxKeys: int(req.GetMaxKeys()), Restart: req.GetRestart(), Snapshot: req.GetSnapshot()}
}

var rowChangeToProto = map[verify.Change]pb.RowChange{
	verify.Changed:         pb.RowChange_ROW_CHANGE_CHANGED,
	verify.MissingOnTarget: pb.RowChange_ROW_CHANGE_MISSING_ON_TARGET,
	verify.ExtraOnTarget:   pb.RowChange_ROW_CHANGE_EXTRA_ON_TARGET,
}

// VerifyToProto converts a verify report: the checks that differ (all of
// them with all), and every table's ranges and differing keys.
func VerifyToProto(r *verify.Report, all bool) *pb.VerifyResponse {
	out := &pb.VerifyResponse{Ok: r.OK(), ChecksTotal: int32(len(r.Checks))}
	for _, c := range r.Checks {
		if !c.OK {
			out.ChecksFailed++
		}
		if all || !c.OK {
			out.Checks = append(out.Checks, &pb.VerifyCheck{Kind: c.Kind, Object: c.Object, Source: c.Source, Target: c.Target, Ok: c.OK})
		}
	}
	for _, t := range r.Tables {
		pt := &pb.VerifyTable{Table: t.Table, Key: t.Key, Ranges: int32(t.Ranges), RangesCompared: int32(t.Compared),
			RangesResumed: int32(t.Resumed), RangesDiffer: int32(t.Differ), MoreRows: int32(t.MoreRows)}
		for _, d := range t.Rows {
			pt.Rows = append(pt.Rows, &pb.VerifyRow{Key: d.Key, Change: rowChangeToProto[d.Change]})
		}
		for _, u := range t.Unsearched {
			pt.Unsearched = append(pt.Unsearched, &pb.VerifyKeyRange{From: u.Range.From, To: u.Range.To,
				SourceRows: u.SourceRows, TargetRows: u.TargetRows})
		}
		out.Tables = append(out.Tables, pt)
	}
	return out
}
