package trust

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps trust below every other weft package: it may import the
// standard library, golang.org/x/crypto and weft/addr only.
func TestImports(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			first := strings.SplitN(p, "/", 2)[0]
			switch {
			case p == "github.com/weft-net/weft/addr":
			case strings.HasPrefix(p, "golang.org/x/crypto/"):
			case !strings.Contains(first, "."):
			default:
				t.Errorf("%s imports %s; trust may import only addr, x/crypto and the standard library", f, p)
			}
		}
	}
}
