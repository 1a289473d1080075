package deploy

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"golang.org/x/mod/modfile"
)

const dockerfile = "docker/Dockerfile"

// minPgMajor is the oldest client tool major the image may ship: the issue
// asks for PostgreSQL 15 or newer.
const minPgMajor = 15

// parseDockerfile parses the Dockerfile with buildkit's own parser and runs
// buildkit's linter (the checks of `docker build --check`) over it; any
// warning fails the test.
func parseDockerfile(t *testing.T) ([]instructions.Stage, []instructions.ArgCommand) {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", dockerfile, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s:%d: parser warning: %s", dockerfile, w.Location.Start.Line, w.Short)
	}
	lint := linter.New(&linter.Config{
		ExperimentalAll: true,
		Warn: func(rule, desc, url, msg string, loc []parser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			t.Errorf("%s:%d: lint %s: %s (%s)", dockerfile, line, rule, msg, url)
		},
	})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("%s: %v", dockerfile, err)
	}
	return stages, metaArgs
}

// TestDockerfile checks what the issue asks of the image: a multi-stage
// build of a static binary, a runtime with PostgreSQL client tools at least
// 15, a non-root user, and writes only to the data directory.
func TestDockerfile(t *testing.T) {
	stages, metaArgs := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build (build, runtime); got %d stage(s)", len(stages))
	}

	// Every ARG used in a FROM is declared before the first FROM, with a
	// default, so a plain `docker build` works.
	defaults := map[string]string{"BUILDPLATFORM": "linux/amd64", "TARGETPLATFORM": "linux/amd64"}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value == nil {
				t.Errorf("ARG %s before FROM needs a default", kv.Key)
				continue
			}
			defaults[kv.Key] = *kv.Value
		}
	}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string {
			v, ok := defaults[k]
			if !ok {
				t.Errorf("FROM uses $%s, which no ARG before the first FROM declares", k)
			}
			return v
		})
	}
	for _, s := range stages {
		img := expand(s.BaseName)
		if !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
			t.Errorf("stage %q: base image %q needs a tag other than latest", s.Name, img)
		}
	}

	// The build stage: a static Go build of cmd/pgcaravan.
	build := stages[0]
	buildRun := strings.Join(runs(build), "\n")
	if !strings.Contains(buildRun, "CGO_ENABLED=0") || !strings.Contains(buildRun, "go build") || !strings.Contains(buildRun, "./cmd/pgcaravan") {
		t.Errorf("stage %q must build ./cmd/pgcaravan with CGO_ENABLED=0; its RUNs:\n%s", build.Name, buildRun)
	}
	if !strings.HasPrefix(expand(build.BaseName), "golang:") {
		t.Errorf("stage %q builds on %q; want the golang image", build.Name, build.BaseName)
	}
	checkGoVersion(t, defaults["GO_VERSION"])

	// The runtime stage.
	final := stages[len(stages)-1]
	base := expand(final.BaseName)
	if !regexp.MustCompile(`^debian:[a-z]+-slim$`).MatchString(base) {
		t.Errorf("runtime base %q: want debian:<release>-slim", base)
	}
	stageArgs := map[string]string{}
	var user, entrypoint string
	var copiedBinary bool
	env := map[string]string{}
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				if kv.Value != nil {
					stageArgs[kv.Key] = *kv.Value
				}
			}
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("ENTRYPOINT must be in exec form, so pgcaravan is PID 1 and gets SIGTERM")
			}
			entrypoint = strings.Join(c.CmdLine, " ")
		case *instructions.CopyCommand:
			if c.From == build.Name && strings.HasSuffix(c.DestPath, "/pgcaravan") {
				copiedBinary = true
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env[kv.Key] = kv.Value
			}
		}
	}
	if !copiedBinary {
		t.Errorf("the runtime stage must COPY --from=%s the binary", build.Name)
	}
	if entrypoint != "/usr/local/bin/pgcaravan" {
		t.Errorf("ENTRYPOINT is %q; want /usr/local/bin/pgcaravan", entrypoint)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root uid, so runAsNonRoot can verify it", user)
	} else if chartUID := chartRunAsUser(t); chartUID != uid {
		t.Errorf("USER %s in the image but runAsUser %s in the chart's values", uid, chartUID)
	}
	for _, k := range []string{"HOME", "TMPDIR"} {
		if env[k] != "/var/lib/pgcaravan" {
			t.Errorf("ENV %s=%q: the process writes only to /var/lib/pgcaravan, so %s must point there", k, env[k], k)
		}
	}

	// The client tools: postgresql-client-N from Debian, N >= 15, installed
	// without recommends and with the apt lists removed.
	finalRun := strings.Join(runs(final), "\n")
	m := regexp.MustCompile(`postgresql-client-(\$\{?PG_MAJOR\}?|\d+)`).FindStringSubmatch(finalRun)
	if m == nil {
		t.Fatalf("the runtime stage installs no postgresql-client-N; its RUNs:\n%s", finalRun)
	}
	major := m[1]
	if strings.Contains(major, "PG_MAJOR") {
		major = stageArgs["PG_MAJOR"]
	}
	if n, err := strconv.Atoi(major); err != nil || n < minPgMajor {
		t.Errorf("postgresql-client-%s: want %d or newer", major, minPgMajor)
	}
	for _, want := range []string{"--no-install-recommends", "rm -rf /var/lib/apt/lists/*"} {
		if !strings.Contains(finalRun, want) {
			t.Errorf("the runtime's apt-get install needs %q", want)
		}
	}
}

func runs(s instructions.Stage) []string {
	var out []string
	for _, cmd := range s.Commands {
		if r, ok := cmd.(*instructions.RunCommand); ok {
			out = append(out, strings.Join(r.CmdLine, " "))
		}
	}
	return out
}

// checkGoVersion: the golang image's Go can build the main module.
func checkGoVersion(t *testing.T, imageGo string) {
	t.Helper()
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil || f.Go == nil {
		t.Fatalf("../go.mod: no go directive (%v)", err)
	}
	want := strings.Join(strings.SplitN(f.Go.Version, ".", 3)[:2], ".")
	if imageGo != want && !strings.HasPrefix(imageGo, want+".") {
		t.Errorf("ARG GO_VERSION=%s but go.mod says go %s: the build stage's Go must match", imageGo, f.Go.Version)
	}
}

// chartRunAsUser is podSecurityContext.runAsUser in the chart's values.
func chartRunAsUser(t *testing.T) string {
	t.Helper()
	v := readValues(t, filepath.Join(chartDir, "values.yaml"))
	switch u := lookup(v, "podSecurityContext", "runAsUser").(type) {
	case float64:
		return strconv.Itoa(int(u))
	case int:
		return strconv.Itoa(u)
	default:
		return ""
	}
}

// TestDockerignore: the build context keeps what `go build` needs.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile(dockerfile + ".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		for _, needed := range []string{"go.mod", "go.sum", "cmd", "proto", "shared", "coordinator", "worker", "cdcnode", "fleet", "report"} {
			if ok, _ := filepath.Match(p, needed); ok || p == "*" {
				t.Errorf("%s.dockerignore: %q leaves %s out of the build context", dockerfile, p, needed)
			}
		}
	}
}

// TestStaticBinary builds cmd/pgcaravan as the build stage does and checks
// the result needs no dynamic loader: it runs on any base image.
func TestStaticBinary(t *testing.T) {
	f, err := elf.Open(pgcaravanBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has an ELF interpreter: it is dynamically linked (CGO_ENABLED=0 missing?)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary links %v dynamically", libs)
	}
}
