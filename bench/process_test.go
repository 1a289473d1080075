package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (pg (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 12 3 20 0 8 0 12345 0 0"
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; st.own != want {
		t.Errorf("own = %v, want %v", st.own, want)
	}
	if want := 150 * time.Millisecond; st.children != want {
		t.Errorf("children = %v, want %v", st.children, want)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2 3"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

// TestProcessCPU checks the accounting, not the machine's speed: a shell that burns CPU
// in a child it waits for has its own times and the child's told apart.
func TestProcessCPU(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	burn := `i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`
	p := newProcess(context.Background(), "burn", filepath.Join(t.TempDir(), "burn.log"), sh, "-c",
		burn+"; "+sh+" -c '"+burn+"'")
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	if p.cpu.Own <= 0 || p.cpu.Total <= p.cpu.Own {
		t.Errorf("own %v, total %v: want 0 < own < total", p.cpu.Own, p.cpu.Total)
	}
}

func TestGroupStopsTheRestWhenOneFails(t *testing.T) {
	dir := t.TempDir()
	g := newGroup(context.Background(), nil)
	g.command("sleeper", filepath.Join(dir, "sleep.log"), "sleep", "60")
	g.command("failer", filepath.Join(dir, "fail.log"), "sh", "-c", "echo boom >&2; exit 3")
	start := time.Now()
	err := g.run()
	if err == nil || !strings.Contains(err.Error(), "failer failed (exit status 3): boom") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want the failer's error with its log", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Error("the sleeper was not stopped")
	}
}

func TestPipe(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	g := newGroup(context.Background(), nil)
	from := g.command("seq", filepath.Join(dir, "seq.log"), "seq", "1", "100000")
	to := g.command("wc", filepath.Join(dir, "wc.log"), "sh", "-c", "wc -l > "+out)
	if err := g.pipe(from, to); err != nil {
		t.Fatal(err)
	}
	if err := g.run(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != "100000" {
		t.Errorf("wc -l = %q", b)
	}
}

func TestSummarize(t *testing.T) {
	runs := []Run{
		{WallSeconds: 30, Verified: true, ClientCPUSeconds: 6},
		{WallSeconds: 10, Verified: true, ClientCPUSeconds: 2},
		{WallSeconds: 20, Verified: true, ClientCPUSeconds: 4},
	}
	s := summarize("d", methodPgcaravan, runs, 100e6, 2)
	if s.WallSeconds != 20 || s.MBPerSecond != 5 || s.ClientCPUShare != 0.1 {
		t.Errorf("summary = wall %v, MB/s %v, CPU share %v; want 20, 5, 0.1", s.WallSeconds, s.MBPerSecond, s.ClientCPUShare)
	}
	runs[0].Error = "boom"
	if s := summarize("d", methodPgcaravan, runs, 100e6, 2); s.OK() || s.Error != "boom" {
		t.Errorf("a failed run must be reported: %+v", s)
	}
	sums := []Summary{
		summarize("d", methodPhysical, []Run{{WallSeconds: 8, Verified: true}}, 1, 2),
		summarize("d", methodPgcopydb, []Run{{WallSeconds: 40, Verified: true}}, 1, 2),
		summarize("d", methodPgcaravan, []Run{{WallSeconds: 10, Verified: true}}, 1, 2),
	}
	addRatios(sums)
	if sums[2].RatioToPgcopydb != 0.25 || sums[2].RatioToPhysical != 1.25 {
		t.Errorf("ratios = %v, %v; want 0.25, 1.25", sums[2].RatioToPgcopydb, sums[2].RatioToPhysical)
	}
}
