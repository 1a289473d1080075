package report

import (
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

func checkLevel(l pb.CheckLevel) string { return strings.TrimPrefix(l.String(), "CHECK_LEVEL_") }

// Precheck writes the precheck table: a row per check with its level and
// message, what to do under it, then the forecast and the totals.
func Precheck(w io.Writer, r *pb.PrecheckResponse) {
	width := len("CHECK")
	for _, c := range r.GetChecks() {
		width = max(width, len(c.GetName()))
	}
	indent := strings.Repeat(" ", 6+2+width+2)
	fmt.Fprintf(w, "%-6s  %-*s  %s\n", "RESULT", width, "CHECK", "DETAIL")
	counts := map[pb.CheckLevel]int{}
	for _, c := range r.GetChecks() {
		counts[c.GetLevel()]++
		lines := strings.Split(c.GetMessage(), "\n")
		fmt.Fprintf(w, "%-6s  %-*s  %s\n", checkLevel(c.GetLevel()), width, c.GetName(), lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%s%s\n", indent, l)
		}
		if c.GetHint() != "" {
			fmt.Fprintf(w, "%s→ %s\n", indent, c.GetHint())
		}
	}
	if f := r.GetForecast(); f.GetAssumedCopyBytesPerSecond() > 0 {
		took := "~" + (time.Duration(f.GetEstimatedCopyMillis()) * time.Millisecond).String()
		if f.GetEstimatedCopyMillis() < 1000 {
			took = "under a second"
		}
		fmt.Fprintf(w, "\nforecast   data %s; WAL %s/s (sampled over %s); copy %s at an assumed %s/s; WAL during the copy ~%s\n",
			Bytes(f.GetDataBytes()), Bytes(int64(f.GetWalBytesPerSecond())), Millis(f.GetWalSampleMillis()),
			took, Bytes(f.GetAssumedCopyBytesPerSecond()), Bytes(f.GetEstimatedWalBytes()))
	}
	fmt.Fprintf(w, "\nprecheck   %d passed, %d warning(s), %d failed\n", counts[pb.CheckLevel_CHECK_LEVEL_PASS],
		counts[pb.CheckLevel_CHECK_LEVEL_WARN], counts[pb.CheckLevel_CHECK_LEVEL_FAIL])
}
