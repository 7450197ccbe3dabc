package dht_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports fails if dht (or dhttest) imports a weft package other than
// addr (and dht itself): nat is a sibling and trust is reached only through
// the injected Validator.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"github.com/weft-net/weft/addr": true,
		"github.com/weft-net/weft/dht":  true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("dhttest/*.go")
	for _, name := range append(files, more...) {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/weft-net/weft/") && !allowed[path] {
				t.Errorf("%s imports %s; dht may import only addr", name, path)
			}
			if strings.Contains(path, ".") && !strings.HasPrefix(path, "github.com/weft-net/weft/") {
				t.Errorf("%s imports third-party %s", name, path)
			}
		}
	}
}
