// Package report renders the coordinator's status for people: the status
// view of `pgcaravan status`, the live progress of `pgcaravan clone`, and
// the summary table at the end. It only formats proto messages it is given.
package report

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// Bytes formats a byte count with a binary unit.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Millis formats a duration in milliseconds.
func Millis(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func phase(p pb.Phase) string { return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_")) }

func tableState(s pb.TableState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TABLE_STATE_"))
}

func unitState(s pb.UnitState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "UNIT_STATE_"))
}

func unitKind(k pb.UnitKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "UNIT_KIND_"))
}

// Status writes the full status view.
func Status(w io.Writer, s *pb.StatusResponse) {
	fmt.Fprintf(w, "migration  %s\n", s.GetMigrationId())
	ph := phase(s.GetPhase())
	if s.GetPaused() {
		ph += " (paused)"
	}
	fmt.Fprintf(w, "phase      %s\n", ph)
	fmt.Fprintf(w, "source     %s (system %s)\n", s.GetSource().GetDatabase(), s.GetSource().GetSystemIdentifier())
	fmt.Fprintf(w, "target     %s (system %s)\n", s.GetTarget().GetDatabase(), s.GetTarget().GetSystemIdentifier())
	if s.GetStartedAt() != nil {
		end := time.Now()
		if s.GetFinishedAt() != nil {
			end = s.GetFinishedAt().AsTime()
		}
		fmt.Fprintf(w, "elapsed    %s\n", end.Sub(s.GetStartedAt().AsTime()).Round(time.Second))
	}
	if s.GetSnapshot() != "" {
		fmt.Fprintf(w, "snapshot   %s\n", s.GetSnapshot())
	}
	var counts []string
	for _, c := range s.GetUnits() {
		counts = append(counts, fmt.Sprintf("%s %d", unitState(c.GetState()), c.GetCount()))
	}
	fmt.Fprintf(w, "units      %s\n", strings.Join(counts, ", "))
	fmt.Fprintf(w, "rows       %d of ~%d\n", s.GetRowsDone(), s.GetRowsTotalEstimate())
	fmt.Fprintf(w, "bytes      %s copied (tables hold ~%s)\n", Bytes(s.GetBytesDone()), Bytes(s.GetBytesTotalEstimate()))
	fmt.Fprintf(w, "workers    %d connected\n", len(s.GetWorkers()))
	for _, wk := range s.GetWorkers() {
		fmt.Fprintf(w, "  %s  %-24s jobs %d  units %v\n", wk.GetWorkerId(), wk.GetName(), wk.GetJobs(), wk.GetUnitIds())
	}
	CDC(w, s.GetCdc())
	for _, warn := range s.GetWarnings() {
		fmt.Fprintf(w, "WARNING    %s\n", warn)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TABLE\tSTATE\tROWS\tBYTES\tUNITS\t")
	for _, t := range s.GetTables() {
		fmt.Fprintf(tw, "%s.%s\t%s\t%d\t%s\t%d/%d\t\n", t.GetSchema(), t.GetName(), tableState(t.GetState()),
			t.GetRows(), Bytes(t.GetBytes()), t.GetCopyUnitsDone(), t.GetCopyUnits())
	}
	tw.Flush()
	Failed(w, s)
}

// Failed lists the failed units, if any.
func Failed(w io.Writer, s *pb.StatusResponse) {
	if len(s.GetFailedUnits()) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFAILED UNITS (%d)\n", len(s.GetFailedUnits()))
	for _, f := range s.GetFailedUnits() {
		fmt.Fprintf(w, "  unit %d  %s  %s  %s  after %d attempt(s):\n    %s\n", f.GetUnitId(), unitKind(f.GetKind()),
			f.GetTable(), f.GetDescription(), f.GetAttempts(), f.GetError())
	}
}

// Progress renders the live view: totals, rate and ETA, and a line per
// table being worked on. prev is the previous sample, for the rate.
func Progress(s, prev *pb.StatusResponse, interval time.Duration, maxTables int) string {
	var b strings.Builder
	rate := 0.0
	if prev != nil && interval > 0 {
		rate = float64(s.GetBytesDone()-prev.GetBytesDone()) / interval.Seconds()
	}
	elapsed := time.Duration(0)
	if s.GetStartedAt() != nil {
		elapsed = time.Since(s.GetStartedAt().AsTime()).Round(time.Second)
	}
	eta := "?"
	if total := s.GetBytesTotalEstimate(); rate > 0 && total > s.GetBytesDone() {
		eta = (time.Duration(float64(total-s.GetBytesDone())/rate) * time.Second).Round(time.Second).String()
	} else if s.GetPhase() != pb.Phase_PHASE_COPY && s.GetPhase() != pb.Phase_PHASE_SCHEMA {
		eta = "-"
	}
	var done, all int64
	for _, c := range s.GetUnits() {
		all += c.GetCount()
		if c.GetState() == pb.UnitState_UNIT_STATE_DONE {
			done += c.GetCount()
		}
	}
	fmt.Fprintf(&b, "%-8s %8s  units %d/%d  rows %d/~%d  %s/~%s  %s/s  ETA %s\n", phase(s.GetPhase()), elapsed,
		done, all, s.GetRowsDone(), s.GetRowsTotalEstimate(), Bytes(s.GetBytesDone()), Bytes(s.GetBytesTotalEstimate()),
		Bytes(int64(rate)), eta)
	if c := s.GetCdc(); c != nil {
		fmt.Fprintf(&b, "  changes: received %s applied %s  lag %s (%.1fs)  spool %s  %.0f changes/s\n", c.GetReceivedLsn(),
			c.GetAppliedLsn(), Bytes(c.GetLagBytes()), c.GetLagSeconds(), Bytes(c.GetSpoolBytes()), c.GetApplyRate())
	}
	prevRows := map[string]int64{}
	if prev != nil {
		for _, t := range prev.GetTables() {
			prevRows[t.GetSchema()+"."+t.GetName()] = t.GetBytes()
		}
	}
	active := 0
	for _, t := range s.GetTables() {
		if t.GetState() != pb.TableState_TABLE_STATE_COPYING && t.GetState() != pb.TableState_TABLE_STATE_INDEXING {
			continue
		}
		if active++; active > maxTables {
			continue
		}
		name := t.GetSchema() + "." + t.GetName()
		trate := 0.0
		if interval > 0 {
			trate = float64(t.GetBytes()-prevRows[name]) / interval.Seconds()
		}
		teta := "?"
		if trate > 0 && t.GetEstimatedBytes() > t.GetBytes() {
			teta = (time.Duration(float64(t.GetEstimatedBytes()-t.GetBytes())/trate) * time.Second).Round(time.Second).String()
		}
		if t.GetState() == pb.TableState_TABLE_STATE_INDEXING {
			teta = "-"
		}
		fmt.Fprintf(&b, "  %-40s %-9s rows %10d  %10s  %10s/s  ETA %s\n", clip(name, 40), tableState(t.GetState()),
			t.GetRows(), Bytes(t.GetBytes()), Bytes(int64(trate)), teta)
	}
	if active > maxTables {
		fmt.Fprintf(&b, "  … and %d more tables in progress\n", active-maxTables)
	}
	return b.String()
}

func clip(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// Summary writes the table printed when a clone ends: per table rows, bytes,
// copy time and index time, then the time of each phase.
func Summary(w io.Writer, s *pb.StatusResponse) {
	tables := append([]*pb.TableStatus(nil), s.GetTables()...)
	sort.SliceStable(tables, func(i, j int) bool { return tables[i].GetCopyMillis() > tables[j].GetCopyMillis() })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TABLE\tROWS\tBYTES\tCOPY\tINDEXES\t")
	var rows, bytes int64
	for _, t := range tables {
		fmt.Fprintf(tw, "%s.%s\t%d\t%s\t%s\t%s\t\n", t.GetSchema(), t.GetName(), t.GetRows(), Bytes(t.GetBytes()),
			Millis(t.GetCopyMillis()), Millis(t.GetIndexMillis()))
		rows += t.GetRows()
		bytes += t.GetBytes()
	}
	fmt.Fprintf(tw, "TOTAL (%d tables)\t%d\t%s\t\t\t\n", len(tables), rows, Bytes(bytes))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PHASE\tTIME\t")
	for _, t := range s.GetTimings() {
		fmt.Fprintf(tw, "%s\t%s\t\n", t.GetName(), Millis(t.GetMillis()))
	}
	if s.GetStartedAt() != nil && s.GetFinishedAt() != nil {
		fmt.Fprintf(tw, "total wall time\t%s\t\n", s.GetFinishedAt().AsTime().Sub(s.GetStartedAt().AsTime()).Round(10*time.Millisecond))
	}
	tw.Flush()
	Failed(w, s)
}

// Cutover writes a cutover's summary.
func Cutover(w io.Writer, c *pb.CutoverResponse) {
	fmt.Fprintf(w, "cutover complete: every change up to %s is on the target\n", c.GetEndpos())
	fmt.Fprintf(w, "  applied through  %s\n", c.GetAppliedLsn())
	fmt.Fprintf(w, "  changes applied  %d (since the cdcnode started)\n", c.GetChangesApplied())
	fmt.Fprintf(w, "  sequences set    %d\n", c.GetSequencesSet())
	fmt.Fprintf(w, "  took             %s\n", Millis(c.GetMillis()))
	fmt.Fprintln(w, "switch the application to the target, then run `pgcaravan cleanup`")
}

// CDC writes the change stream's status, if any.
func CDC(w io.Writer, c *pb.CDCStatus) {
	if c == nil {
		return
	}
	conn := "disconnected"
	if c.GetConnected() {
		conn = "connected"
	}
	fmt.Fprintf(w, "cdc        slot %s, cdcnode %s\n", c.GetSlotName(), conn)
	fmt.Fprintf(w, "           received %s  flushed %s  applied %s  source %s\n", c.GetReceivedLsn(), c.GetFlushedLsn(), c.GetAppliedLsn(), c.GetSourceLsn())
	fmt.Fprintf(w, "           lag %s (%.1fs)  spool %s  apply rate %.0f changes/s  applied %d\n", Bytes(c.GetLagBytes()), c.GetLagSeconds(),
		Bytes(c.GetSpoolBytes()), c.GetApplyRate(), c.GetChangesApplied())
	if c.GetEndpos() != "" {
		fmt.Fprintf(w, "           cutover endpos %s\n", c.GetEndpos())
	}
	if c.GetDiskFull() {
		fmt.Fprintln(w, "           SPOOL DISK FULL: receiving is stopped")
	}
	if c.GetError() != "" {
		fmt.Fprintf(w, "           last error: %s\n", c.GetError())
	}
}
