package report

import (
	"strings"
	"testing"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

func TestPrecheck(t *testing.T) {
	var b strings.Builder
	Precheck(&b, &pb.PrecheckResponse{
		Checks: []*pb.PrecheckCheck{
			{Name: "source_connection", Level: pb.CheckLevel_CHECK_LEVEL_PASS, Message: "PostgreSQL 15.18"},
			{Name: "roles", Level: pb.CheckLevel_CHECK_LEVEL_FAIL, Message: "1 role(s) missing:\nauditor (owns objects)", Hint: "create them"},
		},
		Forecast: &pb.PrecheckForecast{DataBytes: 3 << 30, WalBytesPerSecond: 1 << 20, WalSampleMillis: 5000,
			AssumedCopyBytesPerSecond: 50 << 20, EstimatedCopyMillis: 61000, EstimatedWalBytes: 61 << 20},
		Failed: true,
	})
	want := `RESULT  CHECK              DETAIL
PASS    source_connection  PostgreSQL 15.18
FAIL    roles              1 role(s) missing:
                           auditor (owns objects)
                           → create them

forecast   data 3.0 GiB; WAL 1.0 MiB/s (sampled over 5s); copy ~1m1s at an assumed 50.0 MiB/s; WAL during the copy ~61.0 MiB

precheck   1 passed, 0 warning(s), 1 failed
`
	if got := b.String(); got != want {
		t.Errorf("Precheck rendered:\n%s\nwant:\n%s", got, want)
	}
}
