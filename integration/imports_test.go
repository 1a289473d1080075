package integration

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/pgcaravan/pgcaravan/"

// rule is one of ARCHITECTURE.md's import rules: packages under dir may not
// import anything for which forbidden returns a reason.
type rule struct {
	dir       string
	forbidden func(imp string) string
}

var rules = []rule{
	{"shared", func(imp string) string {
		if strings.HasPrefix(imp, module) && !strings.HasPrefix(imp, module+"shared/") {
			return "shared/ imports no component and no proto"
		}
		return ""
	}},
	{"worker", func(imp string) string {
		if strings.HasPrefix(imp, module+"coordinator") {
			return "workers know the coordinator only through the generated gRPC client"
		}
		return ""
	}},
	{"cdcnode", func(imp string) string {
		if strings.HasPrefix(imp, module+"coordinator") {
			return "the cdcnode knows the coordinator only through the generated gRPC client"
		}
		return ""
	}},
	{"coordinator/plan", func(imp string) string {
		if strings.HasPrefix(imp, module) {
			if imp != module+"shared/ident" {
				return "plan is pure: no pgcaravan package but shared/ident"
			}
			return ""
		}
		if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
			switch imp {
			case "os", "os/exec", "net", "net/http", "database/sql", "syscall", "io/ioutil", "time":
				return "plan is pure: no I/O (and no clock) from the standard library"
			}
			return ""
		}
		return "plan is pure: no third-party packages"
	}},
}

// TestImportRules enforces ARCHITECTURE.md's import rules on every non-test
// Go file of the repository.
func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if !strings.HasPrefix(filepath.ToSlash(rel), r.dir+"/") {
				continue
			}
			checked++
			for _, spec := range f.Imports {
				imp, _ := strconv.Unquote(spec.Path.Value)
				if why := r.forbidden(imp); why != "" {
					t.Errorf("%s imports %s: %s", rel, imp, why)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no file was checked: the walk is broken")
	}
}

// TestImportRulesCatchViolations makes sure the rules reject what they must.
func TestImportRulesCatchViolations(t *testing.T) {
	cases := map[string]string{
		"shared":           module + "coordinator/store",
		"worker":           module + "coordinator/plan",
		"cdcnode":          module + "coordinator/lease",
		"coordinator/plan": "github.com/jackc/pgx/v5",
	}
	for _, r := range rules {
		if imp, ok := cases[r.dir]; ok && r.forbidden(imp) == "" {
			t.Errorf("rule for %s allows %s", r.dir, imp)
		}
	}
	if r := rules[3]; r.forbidden("os") == "" || r.forbidden("sort") != "" {
		t.Error("plan rule misjudges the standard library")
	}
}
