// Package deptest holds the test that keeps weft's imports flowing one way:
// cmd → weft → {tunnel, netstack, platform, dns} → {nat, dht} → trust → addr.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/weft-net/weft"

// layer gives each package its level; a package may import only packages of a
// strictly lower level (siblings on one level may not import each other).
var layer = map[string]int{
	"addr":     0,
	"trust":    1,
	"nat":      2,
	"dht":      2,
	"tunnel":   3,
	"netstack": 3,
	"platform": 3,
	"dns":      3,
	"":         4, // package weft, the module root
	"cmd/weft": 5,
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := rel(fields[0])
		from, ok := layerOf(pkg)
		if !ok {
			continue // internal/, bench/ and the like sit outside the ladder
		}
		checked++
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if top(rel(imp)) == top(pkg) && pkg != "" {
				continue // within one package tree, e.g. dht/dhttest → dht
			}
			to, ok := layerOf(rel(imp))
			if !ok {
				if strings.HasPrefix(rel(imp), "internal/") && from >= layer[""] {
					continue
				}
				t.Errorf("%s imports %s, which is outside the layer ladder", fields[0], imp)
				continue
			}
			if to >= from {
				t.Errorf("%s (level %d) imports %s (level %d): imports must go to a lower level (DESIGN.md)", fields[0], from, imp, to)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d packages checked; is the module path right?", checked)
	}
}

func top(p string) string {
	if p == "cmd/weft" || strings.HasPrefix(p, "cmd/weft/") {
		return "cmd/weft"
	}
	if i := strings.Index(p, "/"); i >= 0 {
		return p[:i]
	}
	return p
}

func rel(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
}

// layerOf maps a package to its level; sub-packages inherit their parent's.
func layerOf(p string) (int, bool) {
	for {
		if l, ok := layer[p]; ok {
			return l, true
		}
		i := strings.LastIndex(p, "/")
		if i < 0 {
			return 0, false
		}
		p = p[:i]
	}
}
