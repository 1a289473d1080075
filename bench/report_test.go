package main

import (
	"strings"
	"testing"
)

func TestRunsOn(t *testing.T) {
	for _, tc := range []struct {
		dataset, method string
		want            bool
	}{
		{datasetPgbench, methodPhysical, true},
		{datasetPgbench, methodFleet, true},
		{datasetLobs, methodDump, true},
		{datasetLobs, methodPgcopydb, true},
		{datasetLobs, methodPgcaravan, true},
		{datasetLobs, methodPhysical, false}, // copies tables only
		{datasetLobs, methodFleet, false},
	} {
		if got := runsOn(tc.dataset, tc.method); got != tc.want {
			t.Errorf("runsOn(%s, %s) = %v, want %v", tc.dataset, tc.method, got, tc.want)
		}
	}
}

// The copies of a dataset of large objects go to their own table, in objects per
// second, and not to the table of MB/s.
func TestPrintTableLargeObjects(t *testing.T) {
	r := &Results{
		Machine: Machine{Cores: 2},
		Datasets: []Dataset{
			{Name: datasetNoPK, DataBytes: 10e6},
			{Name: datasetLobs, DataBytes: 1e6, LargeObjects: 10004, LargeObjectBytes: 27e6},
		},
	}
	for _, s := range []Summary{
		{Dataset: datasetNoPK, Method: methodPgcopydb, Run: Run{WallSeconds: 3, Verified: true}},
		{Dataset: datasetLobs, Method: methodPgcopydb, Run: Run{WallSeconds: 8, Verified: true}, LargeObjectsPerSecond: 1250.6},
		{Dataset: datasetLobs, Method: methodPgcaravan, Run: Run{WallSeconds: 2, Verified: true}, LargeObjectsPerSecond: 5002},
		{Dataset: datasetLobs, Method: methodDump, Run: Run{WallSeconds: 11, Error: "psql failed"}},
	} {
		r.Runs = append(r.Runs, s)
	}
	addRatios(r.Runs)
	var b strings.Builder
	printTable(&b, r)
	out := b.String()

	copies, objects, ok := strings.Cut(out, "Large objects (")
	if !ok {
		t.Fatalf("no large objects table:\n%s", out)
	}
	if strings.Contains(copies, datasetLobs) {
		t.Errorf("the copies table lists the lobs dataset:\n%s", copies)
	}
	if !strings.Contains(copies, datasetNoPK) {
		t.Errorf("the copies table lacks nopk:\n%s", copies)
	}
	objects, _, _ = strings.Cut(objects, "pgcaravan's own CPU")
	for _, want := range []string{
		"LO/s",
		"lobs    10004     27      pgcopydb     8.0  1251        1.00",
		"lobs    10004     27     pgcaravan     2.0  5002        0.25",
		"FAILED",
	} {
		if !strings.Contains(objects, want) {
			t.Errorf("the large objects table lacks %q:\n%s", want, objects)
		}
	}
	if strings.Contains(objects, datasetNoPK) {
		t.Errorf("the large objects table lists nopk:\n%s", objects)
	}
}

func TestPrintApplyGoalLine(t *testing.T) {
	rs := []ApplyResult{
		{Method: applyPgcaravan, Label: "pgcaravan cdcnode", Changes: 200000, ChangesPerSecond: 70000, Verified: true},
		{Method: applyNative, Label: "native", Changes: 200000, ChangesPerSecond: 50000, Verified: true},
		{Method: applyPgcopydb, Label: "pgcopydb follow", Changes: 80000, StartSeconds: 10, ChangesPerSecond: 700, Verified: true},
	}
	var b strings.Builder
	printApply(&b, fullApply, rs)
	if want := "pgcaravan cdcnode applies 100.0× pgcopydb follow's changes/s (goal: at least 10×)"; !strings.Contains(b.String(), want) {
		t.Errorf("no %q in:\n%s", want, b.String())
	}
	// No ratio from a run that did not verify.
	rs[2].Verified = false
	b.Reset()
	printApply(&b, fullApply, rs)
	if strings.Contains(b.String(), "goal: at least 10×") {
		t.Errorf("a ratio from an unverified run:\n%s", b.String())
	}
}
