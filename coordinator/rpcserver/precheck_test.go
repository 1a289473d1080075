package rpcserver

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

func TestPrecheckConversions(t *testing.T) {
	rep := precheck.Report{
		Checks: []precheck.Check{
			{Name: "versions", Level: precheck.Pass, Message: "both PostgreSQL 15"},
			{Name: "roles", Level: precheck.Fail, Message: "auditor is missing", Hint: "create it"},
		},
		Forecast: precheck.Forecast{DataBytes: 100, WALBytesPerSecond: 2.5, WALSample: 5 * time.Second,
			AssumedCopyRate: 10, EstimatedCopy: 10 * time.Second, EstimatedWALBytes: 25},
	}
	got := PrecheckToProto(rep)
	if !got.GetFailed() || len(got.GetChecks()) != 2 {
		t.Fatalf("PrecheckToProto = %v", got)
	}
	if c := got.GetChecks()[1]; c.GetName() != "roles" || c.GetLevel() != pb.CheckLevel_CHECK_LEVEL_FAIL || c.GetHint() != "create it" {
		t.Errorf("check = %v", c)
	}
	if f := got.GetForecast(); f.GetWalSampleMillis() != 5000 || f.GetEstimatedCopyMillis() != 10000 || f.GetEstimatedWalBytes() != 25 || f.GetWalBytesPerSecond() != 2.5 {
		t.Errorf("forecast = %v", f)
	}

	o := PrecheckOptionsFromProto(&pb.PrecheckRequest{Follow: true, WalSample: durationpb.New(time.Second)})
	if !o.Follow || o.WALSample != time.Second || o.LongTransaction != 0 {
		t.Errorf("PrecheckOptionsFromProto = %+v", o)
	}
}
