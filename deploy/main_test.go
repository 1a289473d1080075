package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// chartDir is the chart, relative to this package.
const chartDir = "helm/pgcaravan"

// inCI says whether a missing tool must fail a test instead of skipping it.
func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// helmBinary is $HELM, or ../bin/helm (what `make chart-check` installs), or
// helm on PATH. Without one the test is skipped, or failed under CI=true.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if abs, err := filepath.Abs("../bin/helm"); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return abs
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if inCI() {
		t.Fatal("helm not found: run `make chart-check`, which installs the pinned helm into bin/, or set HELM")
	}
	t.Skip("helm not found: run `make chart-check`, which installs the pinned helm into bin/, or set HELM")
	return ""
}

// kubeVersion is the Kubernetes version the chart is rendered for (its
// Chart.yaml asks for >= 1.27, for native gRPC probes).
const kubeVersion = "1.33.0"

// helmTemplate renders the chart with the given extra arguments.
func helmTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helmTemplateChart(t, chartDir, args...)
}

// helmTemplateChart renders the chart in dir as release "t" in namespace
// "migration".
func helmTemplateChart(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"template", "t", dir, "--namespace", "migration", "--kube-version", kubeVersion}, args...)
	cmd := exec.Command(helmBinary(t), full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &helmError{args: full, err: err, stderr: stderr.String()}
	}
	return string(out), nil
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// pgcaravanBinary builds cmd/pgcaravan the way the Dockerfile's build stage
// does (static, CGO_ENABLED=0, -trimpath), once per test binary.
func pgcaravanBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgcaravan-deploy-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "pgcaravan")
		cmd := exec.Command("go", "build", "-trimpath", "-o", builtBin, "github.com/pgcaravan/pgcaravan/cmd/pgcaravan")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "build cmd/pgcaravan: " + e.err.Error() + "\n" + e.out }
