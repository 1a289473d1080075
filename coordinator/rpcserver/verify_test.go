package rpcserver

import (
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

func TestVerifyConversions(t *testing.T) {
	from := int64(100)
	rep := &verify.Report{
		Checks: []verify.Check{
			{Kind: "rows", Object: "public.t", Source: "5", Target: "5", OK: true},
			{Kind: "checksum", Object: "public.t", Source: "1", Target: "2"},
		},
		Tables: []verify.TableResult{{
			Table: "public.t", Key: "id", Ranges: 3, Compared: 1, Resumed: 2, Differ: 1,
			Rows:       []verify.RowDiff{{Key: 7, Change: verify.MissingOnTarget}, {Key: 9, Change: verify.ExtraOnTarget}},
			MoreRows:   4,
			Unsearched: []verify.UnsearchedRange{{Range: verify.KeyRange{From: &from}, SourceRows: 10, TargetRows: 11}},
		}},
	}
	got := VerifyToProto(rep, false)
	if got.GetOk() || got.GetChecksTotal() != 2 || got.GetChecksFailed() != 1 || len(got.GetChecks()) != 1 || got.GetChecks()[0].GetKind() != "checksum" {
		t.Errorf("VerifyToProto checks = %v", got)
	}
	if all := VerifyToProto(rep, true); len(all.GetChecks()) != 2 {
		t.Errorf("VerifyToProto with all checks = %v", all.GetChecks())
	}
	tb := got.GetTables()[0]
	if tb.GetKey() != "id" || tb.GetRangesResumed() != 2 || tb.GetMoreRows() != 4 ||
		tb.GetRows()[0].GetChange() != pb.RowChange_ROW_CHANGE_MISSING_ON_TARGET || tb.GetRows()[1].GetKey() != 9 {
		t.Errorf("VerifyToProto table = %v", tb)
	}
	if u := tb.GetUnsearched()[0]; u.GetFrom() != 100 || u.To != nil || u.GetTargetRows() != 11 {
		t.Errorf("VerifyToProto unsearched = %v", u)
	}

	o := VerifyOptionsFromProto(&pb.VerifyRequest{Jobs: 3, RangeRows: 10, LeafRows: 2, MaxKeys: 5, Restart: true, Snapshot: "s"})
	if o.Jobs != 3 || o.RangeRows != 10 || o.LeafRows != 2 || o.MaxKeys != 5 || !o.Restart || o.Snapshot != "s" || o.Dir != "" {
		t.Errorf("VerifyOptionsFromProto = %+v", o)
	}
}
