package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgcaravan/pgcaravan/worker"
)

func validConfig() worker.Config {
	cfg := worker.DefaultConfig()
	cfg.Coordinator = "127.0.0.1:7420"
	cfg.SourceURI = "postgres://postgres@127.0.0.1:5432/app"
	cfg.TargetURI = "postgres://postgres@127.0.0.1:5433/app"
	return cfg
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*worker.Config)
		want   string // "" means valid
	}{
		{"default with a coordinator", func(*worker.Config) {}, ""},
		{"missing coordinator", func(c *worker.Config) { c.Coordinator = "" }, "--coordinator is required"},
		{"no loops", func(c *worker.Config) { c.Loops = nil }, "--jobs must be at least 1"},
		{"zero jobs", func(c *worker.Config) { c.Loops = []worker.Loop{{Count: 0}} }, "--jobs must be at least 1"},
		{"negative jobs", func(c *worker.Config) { c.Loops = []worker.Loop{{Count: 2}, {Count: -2}} }, "--jobs must be at least 1"},
		{"several loops", func(c *worker.Config) { c.Loops = []worker.Loop{{Count: 0}, {Count: 1}} }, ""},
		{"zero acquire wait", func(c *worker.Config) { c.AcquireWait = 0 }, "durations must be positive"},
		{"zero backoff", func(c *worker.Config) { c.MinBackoff = 0 }, "durations must be positive"},
		{"max below min backoff", func(c *worker.Config) { c.MaxBackoff = c.MinBackoff - time.Millisecond }, "durations must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want an error saying %q", err, tt.want)
			}
			if _, nerr := worker.New(cfg, hclog.NewNullLogger()); (nerr == nil) != (tt.want == "") {
				t.Errorf("New: %v, want Validate's verdict (%v)", nerr, err)
			}
		})
	}

	// Every problem is reported at once.
	cfg := worker.Config{}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("the zero Config is valid")
	}
	for _, want := range []string{"--coordinator", "--jobs", "durations"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of the zero Config: %v, want it to mention %s", err, want)
		}
	}
}

func TestNewRejectsConnectionStrings(t *testing.T) {
	for _, tt := range []struct{ name, src, dst, want string }{
		{"empty source", "", "postgres://h/db", "source"},
		{"empty target", "postgres://h/db", "", "target"},
		{"unparseable target", "postgres://h/db", "postgres://user:s3cret@h:notaport/db", "target"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.SourceURI, cfg.TargetURI = tt.src, tt.dst
			_, err := worker.New(cfg, hclog.NewNullLogger())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error about the %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
